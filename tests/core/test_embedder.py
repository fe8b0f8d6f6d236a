"""The embedder's two runtimes give the same vectors, so either can serve a calibrated cache."""

from __future__ import annotations

import json
import multiprocessing
import shutil
import threading
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from core.embedder import Embedder, default_model_path, limit_threads, thread_budget
from core.onnx_encoder import OnnxSentenceEncoder, plain_stack

TEXTS = [
    "How do I reverse a list in Python?",
    "what's the capital of france",
    "",
    "x",
    "Convert 5 km to miles, then tell me how long it takes to walk that far. " * 30,
    "Ünïcødé — ✓ 你好, mañana?",
    "Explain `git rebase -i HEAD~3` step by step.",
]


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory,
         monkeypatch_module: pytest.MonkeyPatch) -> tuple[Embedder, Embedder]:
    monkeypatch_module.setenv("CMESH_ONNX_CACHE", str(tmp_path_factory.mktemp("onnx")))
    return Embedder(runtime="onnx"), Embedder(runtime="torch")


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def test_onnx_and_torch_agree_on_every_text(both: tuple[Embedder, Embedder]) -> None:
    onnx, torch_ = both
    a, b = onnx.encode(TEXTS), torch_.encode(TEXTS)
    assert a.shape == b.shape == (len(TEXTS), 384) and a.dtype == np.float32
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    assert (a * b).sum(axis=1).min() > 0.99999
    # a text's vector does not depend on its batch mates (length-sorted sub-batches)
    alone = np.stack([onnx.encode([t])[0] for t in TEXTS])
    assert (alone * a).sum(axis=1).min() > 0.99999
    assert (onnx.encode_requests(TEXTS) * a).sum(axis=1).min() > 0.99999


def test_auto_picks_onnx_on_a_cpu_for_the_shipped_model(monkeypatch: pytest.MonkeyPatch,
                                                        tmp_path: Path) -> None:
    monkeypatch.setenv("CMESH_ONNX_CACHE", str(tmp_path))
    monkeypatch.delenv("CMESH_EMBED_RUNTIME", raising=False)
    assert plain_stack(default_model_path())
    assert Embedder().runtime == "onnx"
    monkeypatch.setenv("CMESH_EMBED_RUNTIME", "torch")
    assert Embedder().runtime == "torch"
    with pytest.raises(ValueError, match="runtime"):
        Embedder(runtime="tensorrt")


def test_another_stack_is_left_to_sentence_transformers(tmp_path: Path) -> None:
    model = tmp_path / "cls-model"
    shutil.copytree(default_model_path(), model)
    pooling = model / "1_Pooling" / "config.json"
    config = json.loads(pooling.read_text())
    config |= {"pooling_mode_mean_tokens": False, "pooling_mode_cls_token": True}
    pooling.write_text(json.dumps(config))
    assert not plain_stack(model)
    assert Embedder(model).runtime == "torch"


def _export_and_encode(cache: str) -> tuple[str, np.ndarray]:
    encoder = OnnxSentenceEncoder(default_model_path(), cache=Path(cache))
    return str(encoder.file), encoder.encode(TEXTS[:2])


def test_services_starting_together_export_once_and_read_a_whole_file(tmp_path: Path) -> None:
    """Three processes (services starting at once) and two threads find no export and
    write one each: every one reads a whole file, and one file is left."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(3, mp_context=context) as pool:
        results = list(pool.map(_export_and_encode, [str(tmp_path)] * 3))
    with ThreadPoolExecutor(2) as threads:
        results += list(threads.map(_export_and_encode, [str(tmp_path)] * 2))
    assert len({file for file, _ in results}) == 1
    assert [p.name for p in Path(results[0][0]).parent.iterdir()] == ["model.onnx"]
    assert all(np.array_equal(results[0][1], v) for _, v in results[1:])


def test_the_thread_budget_is_the_calling_threads() -> None:
    seen: list[int] = []

    def worker() -> None:
        limit_threads(1)
        seen.append(thread_budget())

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert seen == [1]
