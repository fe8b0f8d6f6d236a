"""BrokerTier across regions, over a scripted client (one class; the real supercluster
runs in tests/services/test_region_failover.py): which region a job goes to next,
and with what text already received."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import pytest

from core.errors import Overloaded
from core.generation import GenerationRequest, Sampling
from protos.broker.v1 import broker_pb2
from services.broker.client import JobError
from services.gateway.broker_tier import BrokerTier
from services.gateway.domain import TierCall


class Script:
    """What one region does with a job: refuse it, stay silent, or send `words` words
    and then fail with `then` (or finish)."""

    def __init__(self, refuse: JobError | None = None, silent: bool = False,
                 words: int = 4, then: JobError | None = None) -> None:
        self.refuse, self.silent, self.words, self.then = refuse, silent, words, then


class Stream:
    def __init__(self, job: broker_pb2.GenerateJob, script: Script, cancels: list[str]) -> None:
        self.job, self.script, self.cancels = job, script, cancels

    def __aiter__(self) -> AsyncGenerator[broker_pb2.JobChunk, None]:
        return self._chunks()

    async def _chunks(self) -> AsyncGenerator[broker_pb2.JobChunk, None]:
        done = False
        try:
            if self.script.silent:
                await asyncio.sleep(3600)
            start = len(self.job.partial_token_ids)
            for i in range(start, start + self.script.words):
                yield broker_pb2.JobChunk(text_delta=f" w{i}", token_ids=[i])
            if self.script.then is not None:
                done = True
                raise self.script.then
            done = True
            yield broker_pb2.JobChunk(finish_reason=1)
        finally:
            if not done:
                self.cancels.append(self.job.region)


class Client:
    def __init__(self, scripts: dict[str, Script]) -> None:
        self.scripts = scripts
        self.jobs: list[broker_pb2.GenerateJob] = []
        self.cancels: list[str] = []

    async def submit(self, job: broker_pb2.GenerateJob, deadline_s: float | None = None
                     ) -> Stream:
        self.jobs.append(job)
        script = self.scripts[job.region]
        if script.refuse is not None:
            raise script.refuse
        return Stream(job, script, self.cancels)


def call() -> TierCall:
    return TierCall(GenerationRequest(prompt="hi", sampling=Sampling(max_tokens=8),
                                      request_id="r1"), tenant="t", timeout_s=30)


async def run(tier: BrokerTier) -> tuple[str, list[tuple[str, str]]]:
    text, places = [], []
    async for delta in tier.generate(call()):
        text.append(delta.text)
        if delta.region:
            places.append((delta.region, delta.failover))
    return "".join(text), places


async def test_at_home_the_job_stays_in_the_own_region_with_no_reason() -> None:
    client = Client({"a": Script(), "b": Script()})
    text, places = await run(BrokerTier("small", client, ["a", "b"]))  # type: ignore[arg-type]
    assert text == " w0 w1 w2 w3" and places == [("a", "")]
    assert [j.region for j in client.jobs] == ["a"]
    assert client.jobs[0].job_id == "r1"  # the first job keeps the request's id


async def test_a_full_queue_goes_to_the_next_region_naming_why() -> None:
    full = JobError("RESOURCE_EXHAUSTED", "tier small queue full", 500)
    client = Client({"a": Script(refuse=full), "b": Script()})
    text, places = await run(BrokerTier("small", client, ["a", "b"]))  # type: ignore[arg-type]
    assert text == " w0 w1 w2 w3"
    assert places == [("b", "a: tier small queue full")]


async def test_failing_midway_goes_on_in_the_next_region_after_the_words_received() -> None:
    cut = JobError("UNAVAILABLE", "tier 'small': no healthy backend replica")
    client = Client({"a": Script(words=2, then=cut), "b": Script(words=2)})
    text, places = await run(BrokerTier("small", client, ["a", "b"]))  # type: ignore[arg-type]
    assert text == " w0 w1 w2 w3"  # b continued after a's two words
    assert list(client.jobs[1].partial_token_ids) == [0, 1]
    assert client.jobs[1].job_id != client.jobs[0].job_id  # a new job, not a duplicate id
    assert places == [("a", ""), ("b", "a: tier 'small': no healthy backend replica")]


async def test_a_silent_region_is_left_after_the_wait_and_its_job_cancelled() -> None:
    client = Client({"a": Script(silent=True), "b": Script()})
    tier = BrokerTier("small", client, ["a", "b"], failover_wait_s=0.2)  # type: ignore[arg-type]
    text, places = await asyncio.wait_for(run(tier), 5)
    assert text == " w0 w1 w2 w3" and places == [("b", "a: no token within 0.2 s")]
    assert client.cancels == ["a"]


async def test_a_batch_line_waits_in_its_region_instead_of_leaving_it() -> None:
    client = Client({"a": Script(silent=True), "b": Script()})
    tier = BrokerTier("small", client, ["a", "b"], failover_wait_s=0.1)  # type: ignore[arg-type]
    batch = TierCall(GenerationRequest(prompt="hi", request_id="r1"), tenant="t",
                     timeout_s=30, batch=True)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.5):
            async for _ in tier.generate(batch):
                pass
    assert [j.region for j in client.jobs] == ["a"]  # still waiting there, not moved


async def test_the_last_region_answers_with_its_own_error() -> None:
    full = JobError("RESOURCE_EXHAUSTED", "tier small queue full", 700)
    client = Client({"a": Script(refuse=JobError("UNAVAILABLE", "no live broker")),
                     "b": Script(refuse=full)})
    with pytest.raises(Overloaded) as err:
        await run(BrokerTier("small", client, ["a", "b"]))  # type: ignore[arg-type]
    assert err.value.retry_after_s == pytest.approx(0.7)


async def test_a_bad_request_is_not_retried_elsewhere() -> None:
    bad = JobError("INVALID_ARGUMENT", "prompt: too long", field="prompt")
    client = Client({"a": Script(refuse=bad), "b": Script()})
    with pytest.raises(Exception, match="too long"):
        await run(BrokerTier("small", client, ["a", "b"]))  # type: ignore[arg-type]
    assert [j.region for j in client.jobs] == ["a"]
