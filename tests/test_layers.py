"""The import-linter contracts in pyproject.toml hold, and they catch a planted violation.

Both runs work on a copy of the source packages, so planting never touches the tree.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("core", "cache", "cascade", "services", "cmesh", "protos")
CONTRACTS = (
    "Layers: cmesh above services",
    "Domain packages (core, cache, cascade) import no transport",
    "Only cmesh imports the CLI libraries",
)


def _copy_tree(dest: Path) -> None:
    for name in PACKAGES:
        shutil.copytree(ROOT / name, dest / name,
                        ignore=shutil.ignore_patterns("__pycache__", "artifacts", "*.proto"))
    shutil.copy(ROOT / "pyproject.toml", dest / "pyproject.toml")


def _lint(tree: Path) -> subprocess.CompletedProcess[str]:
    binary = Path(sys.executable).parent / "lint-imports"
    return subprocess.run([str(binary), "--no-cache"], cwd=tree, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(tree)})


def test_contracts_hold_and_catch_planted_violations(tmp_path: Path) -> None:
    _copy_tree(tmp_path)
    clean = _lint(tmp_path)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    for contract in CONTRACTS:
        assert f"{contract}" in clean.stdout and "3 kept, 0 broken" in clean.stdout

    planted = {
        "core/_planted.py": "import grpc\n",                   # domain importing transport
        "services/_planted.py": "import cmesh.output\n",       # services importing the CLI
        "cascade/_planted.py": "import cache.keys\n",          # siblings must stay apart
        "services/common/_planted.py": "import typer\n",       # CLI library outside cmesh
    }
    for path, text in planted.items():
        (tmp_path / path).write_text(text)
    broken = _lint(tmp_path)
    assert broken.returncode != 0
    assert "0 kept, 3 broken" in broken.stdout, broken.stdout
    for path in planted:
        module = path.removesuffix(".py").replace("/", ".")
        assert module in broken.stdout, f"{module} not reported:\n{broken.stdout}"
