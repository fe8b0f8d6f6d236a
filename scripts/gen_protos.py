"""Regenerate the Python code for every .proto under protos/ (run from anywhere).

    python scripts/gen_protos.py            # write the generated files
    python scripts/gen_protos.py --check    # exit 1 if they differ from what is on disk
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def generate(out_dir: Path) -> list[Path]:
    """Run protoc over protos/ into `out_dir`; return the generated files (relative)."""
    import grpc_tools
    from grpc_tools import protoc

    protos = sorted(p.relative_to(ROOT) for p in (ROOT / "protos").rglob("*.proto"))
    include = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{ROOT}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *map(str, protos),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    return sorted(p.relative_to(out_dir) for p in out_dir.rglob("*") if p.name.endswith(SUFFIXES))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        files = generate(out)
        stale = [f for f in files if not (ROOT / f).is_file()
                 or (ROOT / f).read_bytes() != (out / f).read_bytes()]
        if args.check:
            for f in stale:
                print(f"stale generated file: {f}", file=sys.stderr)
            return 1 if stale else 0
        for f in files:
            (ROOT / f).write_bytes((out / f).read_bytes())
        print(f"wrote {len(files)} files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
