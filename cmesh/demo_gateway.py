"""The scripted demo session through the gateway, and its summary table.

Each step is one request with the stack's dev key (or the second tenant's);
the summary adds up what the metadata said: hit rate, tier mix, escalations,
cost against sending everything to the most capable tier, latency per stage.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from rich.table import Table

from cmesh.client import ask, build_request, read_key
from cmesh.output import console
from protos.gateway.v1 import gateway_pb2

EASY = "What is the capital of France?"
PARAPHRASE = "Can you tell me what the capital of France is?"
HARD = ("Let f(x) = x^3 - 6x^2 + 11x - 6. Find all real roots of f, then compute the "
        "integral of f from 1 to 3 and explain each step.")
FOLLOW_UP = "How many people live there?"
MAX_TOKENS = 48


@dataclass
class Step:
    label: str
    prompt: str
    tenant: str = "dev"
    conversation: str = ""  # "paris": after the demo's Paris exchange; "rome": another one
    options: dict[str, Any] = field(default_factory=dict)


def script() -> list[Step]:
    """The demo's requests, in order (conversation steps are filled in as they run)."""
    return [
        Step("a question (miss: a model answers)", EASY),
        Step("the same question again (cache hit, no model)", EASY),
        Step("a paraphrase (hits only where the verifier allows)", PARAPHRASE),
        Step("another tenant asks it (its own cache: miss)", EASY, tenant="guest"),
        Step("a hard prompt (the classifier routes it to large)", HARD),
        Step("low confidence escalates (cascade, cascade.small=0.99)",
             "Name three primary colours.",
             options={"policy": "cascade", "thresholds": ["cascade.small=0.99"],
                      "skip_cache": True}),
        Step("a conversation starts", "Tell me about Paris in one sentence."),
        Step("a follow-up in that conversation", FOLLOW_UP, conversation="paris"),
        Step("the same follow-up in another conversation (no hit across)", FOLLOW_UP,
             conversation="rome"),
    ]


async def run_session(address: str, state_dir: Path) -> dict[str, Any]:
    """Run the script through the gateway at `address`; print and return the summary."""
    keys = {t: read_key(state_dir, t) for t in ("dev", "guest")}
    metas: list[gateway_pb2.ResponseMetadata] = []
    texts: list[str] = []
    paris_answer = ""
    async with grpc.aio.insecure_channel(address) as channel:
        for i, step in enumerate(script()):
            turns: list[tuple[str, str]] = []
            if step.conversation == "paris":
                turns = [("user", "Tell me about Paris in one sentence."),
                         ("assistant", paris_answer)]
            elif step.conversation == "rome":
                turns = [("user", "Tell me about Rome in one sentence."),
                         ("assistant", "Rome is the capital of Italy.")]
            console.rule(f"{i + 1}. {step.label}  [dim]({step.tenant})[/dim]")
            console.print(f"[bold]> {step.prompt}[/bold]")
            request = build_request(step.prompt, max_tokens=MAX_TOKENS, turns=turns,
                                    **step.options)
            text, meta = await ask(address, keys[step.tenant], request, channel=channel,
                                   on_text=lambda t: console.print(
                                       t, end="", soft_wrap=True, highlight=False))
            console.print()
            if step.prompt.startswith("Tell me about Paris"):
                paris_answer = text
            console.print(f"[dim]{_line(meta)}[/dim]")
            metas.append(meta)
            texts.append(text)
    summary = summarise(metas)
    summary["first_answer"] = texts[0] if texts else ""
    console.print(summary_table(summary))
    return summary


def _line(m: gateway_pb2.ResponseMetadata) -> str:
    where = "cache" if m.cache_hit else " -> ".join(m.tiers_tried)
    score = f", score {m.classifier_score:.2f}" if m.classifier_status == "scored" else ""
    stored = "stored" if m.cache_stored else f"not stored: {m.cache_store_reason}"
    return (f"{where} | cache {m.cache_status} (sim {m.cache_similarity:.2f}, verifier "
            f"{m.cache_verifier_probability:.2f}){score} | {stored} | "
            f"confidence {m.confidence:.2f} | cost {m.cost:.5f} saving {m.saving:.5f} | "
            f"{m.latency.total_ms:.0f} ms")


def summarise(metas: list[gateway_pb2.ResponseMetadata]) -> dict[str, Any]:
    """Hit rate, tier mix, escalations, cost against all-large, mean latency per stage."""
    hits = [m for m in metas if m.cache_hit]
    generated = [m for m in metas if not m.cache_hit]
    tiers: dict[str, int] = {}
    for m in generated:
        tiers[m.tier] = tiers.get(m.tier, 0) + 1
    cost = sum(m.cost for m in metas)
    all_large = sum(m.cost + m.saving for m in metas)

    def mean_ms(name: str, among: list[gateway_pb2.ResponseMetadata]) -> float:
        values = [getattr(m.latency, name) for m in among]
        return statistics.fmean(values) if values else 0.0

    # Step 1 and step 4 ask the same question as misses (another tenant), so they generate
    # the same answer: the pair shows whether the first request after SERVING paid for
    # anything the second did not (a cold engine, encoder or channel).
    both_missed = len(metas) > 3 and not metas[0].cache_hit and not metas[3].cache_hit
    first = metas[0].latency.total_ms if both_missed else 0.0
    same = metas[3].latency.total_ms if both_missed else 0.0
    return {
        "first_request_ms": first, "same_question_other_tenant_ms": same,
        "first_over_second": first / same if same else 0.0,
        "repeat_hit": len(metas) > 1 and metas[1].cache_hit,
        "requests": len(metas), "cache_hits": len(hits),
        "hit_rate": len(hits) / len(metas) if metas else 0.0,
        "tier_mix": tiers,
        "escalations": sum(len(m.tiers_tried) - 1 for m in generated if m.tiers_tried),
        "cost": cost, "cost_all_large": all_large,
        "cost_share_of_all_large": cost / all_large if all_large else 0.0,
        "mean_ms": {stage: mean_ms(f"{stage}_ms", metas)
                    for stage in ("cache", "classifier", "first_token", "total")},
        "mean_hit_ms": mean_ms("total_ms", hits),
        "mean_miss_ms": mean_ms("total_ms", generated),
    }


def summary_table(s: dict[str, Any]) -> Table:
    table = Table(title="demo summary")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_row("requests", str(s["requests"]))
    table.add_row("first request / same question, other tenant (both misses)",
                  f"{s['first_request_ms']:.0f} / {s['same_question_other_tenant_ms']:.0f} ms "
                  f"({s['first_over_second']:.2f}x)" if s["same_question_other_tenant_ms"]
                  else "n/a: answered from the cache (an earlier run stored it)")
    table.add_row("the repeat (step 2) hit the cache", "yes" if s["repeat_hit"] else "NO")
    table.add_row("cache hit rate", f"{s['hit_rate']:.0%} ({s['cache_hits']})")
    table.add_row("tier mix (answers generated)",
                  ", ".join(f"{k} {v}" for k, v in sorted(s["tier_mix"].items())))
    table.add_row("escalations", str(s["escalations"]))
    table.add_row("cost / all-large cost",
                  f"{s['cost']:.5f} / {s['cost_all_large']:.5f} "
                  f"({s['cost_share_of_all_large']:.0%})")
    for stage, ms in s["mean_ms"].items():
        table.add_row(f"mean {stage} ms", f"{ms:.0f}")
    table.add_row("mean total ms, hits / misses",
                  f"{s['mean_hit_ms']:.0f} / {s['mean_miss_ms']:.0f}")
    return table
