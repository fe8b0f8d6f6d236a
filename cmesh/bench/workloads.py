"""Seeded request streams for `cmesh bench system` (issue 19), as files an outside client
reads: vLLM's benchmark client takes them as a custom dataset
(`python -m cmesh.bench.vllm_client --dataset-name custom --dataset-path F.jsonl
--disable-shuffle`), one file per tenant because the client sends one API key.

- `unique`: prompts from the project's data with a spread of prompt and answer
  lengths: MMLU questions (short answers), GSM8K problems (worked answers), and
  chat-like questions and requests (the cache's hand-written and GPTCache texts);
- `repeat30` / `repeat60`: the same mix, where 30 % / 60 % of requests repeat an
  earlier request of the same tenant word for word or as a paraphrase (from the
  project's paraphrase data), so the cache's payoff and its wrong hits can be read
  off the labelled rows.

Every request carries its labels (`kind`: unique, repeat or paraphrase; `same_as`:
the index of the request it repeats) in a sidecar file beside the client's JSONL;
the client reads only `prompt` and `output_tokens`.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from cache.pairs import load_pairs

ROOT = Path(__file__).resolve().parents[2]
ROUTELLM = ROOT / "data" / "routellm"
PARAPHRASE_FILES = (ROOT / "data" / "cache" / "handwritten_pairs.json",
                    ROOT / "data" / "gptcache" / "mock_data.json")
REPEAT_SHARES = {"unique": 0.0, "repeat30": 0.3, "repeat60": 0.6}
# (source, share of unique requests, output tokens low-high)
MIX = (("mmlu", 0.35, (8, 24)), ("gsm8k", 0.25, (96, 192)), ("chat", 0.40, (32, 160)))


@dataclass(frozen=True)
class Request:
    """One request of a stream, with what a scorer needs to know about it."""

    prompt: str
    output_tokens: int
    tenant: str
    source: str
    kind: str = "unique"   # unique | repeat | paraphrase
    same_as: int = -1      # the earlier request (index in the stream) it asks again


@dataclass
class Pools:
    """Prompts to draw from; `paraphrases` maps a chat text to texts that ask the same."""

    mmlu: list[str]
    gsm8k: list[str]
    chat: list[str]
    paraphrases: dict[str, list[str]]

    @classmethod
    def load(cls) -> Pools:
        from cascade.data import read_tables

        mmlu = read_tables(ROUTELLM / "mmlu").prompts
        gsm8k = read_tables(ROUTELLM / "gsm8k_responses.csv").prompts
        paraphrases: dict[str, list[str]] = {}
        for path in PARAPHRASE_FILES:
            for pair in load_pairs(path):
                if pair.label == 1 and pair.a != pair.b:
                    paraphrases.setdefault(pair.a, []).append(pair.b)
        return cls(mmlu, gsm8k, sorted(paraphrases), paraphrases)


def build(name: str, n: int, tenants: Sequence[str] = ("acme", "globex", "initech"),
          seed: int = 0, pools: Pools | None = None) -> list[Request]:
    """`n` requests of workload `name` (`REPEAT_SHARES`), tenants interleaved at random."""
    if name not in REPEAT_SHARES:
        raise ValueError(f"workload: unknown {name!r}; known: {sorted(REPEAT_SHARES)}")
    if n < 1 or not tenants:
        raise ValueError("workload: needs at least one request and one tenant")
    pools = pools or Pools.load()
    rng = random.Random(f"{name}:{seed}")
    share = REPEAT_SHARES[name]
    out: list[Request] = []
    seen: dict[str, list[int]] = {t: [] for t in tenants}
    for _ in range(n):
        tenant = rng.choice(list(tenants))
        earlier = seen[tenant]
        if earlier and rng.random() < share:
            j = rng.choice(earlier)
            origin = j if out[j].same_as < 0 else out[j].same_as  # the first asking
            first = out[origin]
            options = pools.paraphrases.get(first.prompt, [])
            if options and rng.random() < 0.5:
                prompt, kind = rng.choice(options), "paraphrase"
            else:
                prompt, kind = first.prompt, "repeat"
            out.append(Request(prompt, first.output_tokens, tenant, first.source, kind,
                               origin))
        else:
            source, _, (low, high) = rng.choices(MIX, weights=[w for _, w, _ in MIX])[0]
            pool: list[str] = getattr(pools, source)
            out.append(Request(rng.choice(pool), rng.randint(low, high), tenant, source))
        earlier.append(len(out) - 1)
    return out


def write(requests: Sequence[Request], out_dir: Path, name: str) -> dict[str, Path]:
    """One client JSONL per tenant (`<name>.<tenant>.jsonl`: prompt, output_tokens, in
    stream order) and every request's labels (`<name>.labels.jsonl`)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    lines: dict[str, list[str]] = {}
    for r in requests:
        lines.setdefault(r.tenant, []).append(
            json.dumps({"prompt": r.prompt, "output_tokens": r.output_tokens}))
    for tenant, rows in lines.items():
        files[tenant] = out_dir / f"{name}.{tenant}.jsonl"
        files[tenant].write_text("\n".join(rows) + "\n", encoding="utf-8")
    (out_dir / f"{name}.labels.jsonl").write_text(
        "".join(json.dumps(asdict(r)) + "\n" for r in requests), encoding="utf-8")
    return files
