"""Workload files of `cmesh bench system`: seeded, labelled, and read by vLLM's own client."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cmesh.bench.workloads import Pools, build, write


@pytest.fixture(scope="module")
def pools() -> Pools:
    return Pools.load()


def test_the_same_seed_gives_the_same_stream_and_another_seed_another(pools: Pools) -> None:
    a, b = build("repeat30", 200, pools=pools), build("repeat30", 200, pools=pools)
    assert a == b
    assert build("repeat30", 200, seed=1, pools=pools) != a


@pytest.mark.parametrize(("name", "share"), [("unique", 0.0), ("repeat30", 0.3),
                                             ("repeat60", 0.6)])
def test_repeat_share_and_what_each_repeat_points_at(pools: Pools, name: str,
                                                     share: float) -> None:
    stream = build(name, 600, pools=pools)
    again = [r for r in stream if r.kind != "unique"]
    assert abs(len(again) / len(stream) - share) < 0.07
    for r in again:
        first = stream[r.same_as]
        assert r.same_as < stream.index(r) and first.kind == "unique"
        assert first.tenant == r.tenant  # a tenant's cache only ever answers its own
        if r.kind == "repeat":
            assert r.prompt == first.prompt
        else:
            assert r.prompt != first.prompt and r.prompt in pools.paraphrases[first.prompt]
    if share:
        assert {r.kind for r in again} == {"repeat", "paraphrase"}
    sources = {r.source for r in stream}
    assert sources == {"mmlu", "gsm8k", "chat"}
    lengths = [r.output_tokens for r in stream]
    assert min(lengths) < 30 and max(lengths) > 150  # a spread of answer lengths


def test_unknown_workload_is_refused_by_name(pools: Pools) -> None:
    with pytest.raises(ValueError, match="unknown 'repeat90'"):
        build("repeat90", 10, pools=pools)


def test_files_are_a_custom_dataset_for_vllms_benchmark_client(pools: Pools,
                                                               tmp_path: Path) -> None:
    from vllm.benchmarks.datasets import CustomDataset

    stream = build("repeat60", 120, pools=pools)
    files = write(stream, tmp_path, "repeat60")
    assert set(files) == {r.tenant for r in stream}
    for tenant, path in files.items():
        mine = [r for r in stream if r.tenant == tenant]
        data = CustomDataset(dataset_path=str(path), disable_shuffle=True)
        samples = data.sample(tokenizer=None, num_requests=len(mine))
        assert [s.prompt for s in samples] == [r.prompt for r in mine]  # order kept
    labels = [json.loads(line) for line in
              (tmp_path / "repeat60.labels.jsonl").read_text().splitlines()]
    assert [row["kind"] for row in labels] == [r.kind for r in stream]

