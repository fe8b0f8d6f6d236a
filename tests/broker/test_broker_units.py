"""Pure parts of the broker: scheduler, dispatch scoring, job checks, settings, compose."""

from __future__ import annotations

import pytest
import yaml

from core.errors import FieldError
from protos.broker.v1 import broker_pb2
from services.broker.dispatch import Replica, affinity_key, pick, rendezvous
from services.broker.jobs import Outcome, check_job, run_job
from services.broker.scheduler import Scheduler
from services.broker.settings import BrokerSettings, parse_backends
from services.broker.subjects import job_subject, tenant_token
from tests.support import ROOT


def drain(s: Scheduler[str]) -> list[str]:
    out = []
    while (q := s.pop()) is not None:
        out.append(q.item)
    return out


def test_interactive_first_with_the_batch_share() -> None:
    s: Scheduler[str] = Scheduler(batch_share=0.25)
    for i in range(4):
        s.push("batch", "t", f"b{i}")
    for i in range(6):
        s.push("interactive", "t", f"i{i}")
    assert drain(s) == ["i0", "i1", "i2", "b0", "i3", "i4", "i5", "b1", "b2", "b3"]


def test_batch_share_zero_waits_and_one_alternates_to_batch() -> None:
    s0: Scheduler[str] = Scheduler(batch_share=0.0)
    s1: Scheduler[str] = Scheduler(batch_share=1.0)
    for s in (s0, s1):
        s.push("batch", "t", "b0")
        s.push("interactive", "t", "i0")
        s.push("interactive", "t", "i1")
    assert drain(s0) == ["i0", "i1", "b0"]
    assert drain(s1) == ["b0", "i0", "i1"]
    with pytest.raises(ValueError):
        Scheduler(batch_share=1.5)


def test_tenants_take_turns_within_a_class() -> None:
    s: Scheduler[str] = Scheduler()
    for i in range(5):
        s.push("interactive", "flood", f"a{i}")
    s.push("interactive", "other", "b0")
    s.push("interactive", "third", "c0")
    assert drain(s)[:4] == ["a0", "b0", "c0", "a1"]


def test_scheduler_remove_takes_out_matching_jobs() -> None:
    s: Scheduler[str] = Scheduler()
    s.push("interactive", "t", "keep")
    s.push("batch", "t", "drop")
    assert [q.item for q in s.remove(lambda x: x == "drop")] == ["drop"]
    assert len(s) == 1 and drain(s) == ["keep"]


def replicas(*loads: tuple[int, int]) -> list[Replica]:
    return [Replica(f"r{i}:1", True, cap, used) for i, (cap, used) in enumerate(loads)]


def test_pick_prefers_free_slots_and_skips_unhealthy() -> None:
    rs = replicas((4, 3), (4, 0), (4, 1))
    assert pick(rs)[0] is rs[1]
    rs[1].healthy = False
    assert pick(rs)[0] is rs[2]
    full = replicas((2, 2), (2, 5))
    assert pick(full) == (None, False)
    assert full[1].queue_depth == 3


def test_affinity_keeps_a_key_on_one_replica_until_it_is_full() -> None:
    rs = replicas((4, 0), (4, 0), (4, 0))
    top = rendezvous("conv-1", rs)[0]
    assert all(pick(rs, "conv-1") == (top, True) for _ in range(3))
    top.reported_in_flight = 4
    other, hit = pick(rs, "conv-1")
    assert other is not top and not hit
    # every broker ranks the same way, whatever order it lists replicas in
    assert rendezvous("conv-1", list(reversed(rs)))[0] is top


def test_affinity_key_from_a_long_shared_prefix_only() -> None:
    system = "You are a careful assistant. " * 10
    assert affinity_key("explicit", "", "", 200) == "explicit"
    assert affinity_key("", "short", "", 200) == ""
    key = affinity_key("", system, "", 200)
    assert key and key == affinity_key("", system, "", 200)
    assert key != affinity_key("", system, "first turn", 200)


def good_job(**changes: object) -> broker_pb2.GenerateJob:
    job = broker_pb2.GenerateJob(job_id="j1", tier="small", prompt="hi", reply_subject="_INBOX.x")
    for k, v in changes.items():
        setattr(job, k, v)
    return job


@pytest.mark.parametrize(("field", "changes"), [
    ("job_id", {"job_id": ""}), ("job_id", {"job_id": "a b"}), ("tier", {"tier": "large"}),
    ("reply_subject", {"reply_subject": ""}), ("prompt", {"prompt": "  "}),
    ("priority", {"priority": 7}),
])
def test_bad_jobs_name_the_field(field: str, changes: dict) -> None:
    with pytest.raises(FieldError) as err:
        check_job(good_job(**changes), "small")
    assert err.value.field == field


def test_job_class_and_deadline() -> None:
    job = good_job(priority=broker_pb2.PRIORITY_BATCH)
    job.deadline.FromSeconds(1)
    run = check_job(job, "small")
    assert run.job_class == "batch" and run.expired()
    assert check_job(good_job(), "small").deadline is None


class _CountingBackend:
    """Counts the calls a job makes (it must make none here)."""

    def __init__(self) -> None:
        self.calls = 0

    async def generate(self, address, request, continue_ids, timeout):  # type: ignore[no-untyped-def]
        self.calls += 1
        yield  # pragma: no cover


class _Sink:
    def __init__(self) -> None:
        self.chunks: list[broker_pb2.JobChunk] = []

    async def send(self, chunk: broker_pb2.JobChunk) -> None:
        self.chunks.append(chunk)


async def test_a_job_past_its_deadline_never_reaches_a_backend() -> None:
    job = good_job()
    job.deadline.FromSeconds(1)  # long past
    backend, sink = _CountingBackend(), _Sink()

    async def choose(run: object, tried: set[str]) -> Replica | None:
        return None

    outcome = await run_job(check_job(job, "small"), Replica("b:1"), backend, sink, choose)
    assert outcome is Outcome.EXPIRED and backend.calls == 0
    assert [c.error.code for c in sink.chunks] == [4]  # DEADLINE_EXCEEDED


def test_subjects_and_settings() -> None:
    assert job_subject("small", "batch", "acme") == "gen.small.batch.acme"
    assert tenant_token("a.b c").startswith("h") and "." not in tenant_token("a.b c")
    assert parse_backends("small=a:1,b:2; large=c:3") == {"small": ["a:1", "b:2"],
                                                          "large": ["c:3"]}
    with pytest.raises(ValueError):
        BrokerSettings(backends="small")
    with pytest.raises(ValueError):
        BrokerSettings(backends="small=a:1", queue_max_jobs=5, tenant_max_jobs=6)


def test_each_region_has_its_own_queue_subjects_stream_and_beacons() -> None:
    from services.broker.jetstream import QueueLimits, done_bucket, stream_config
    from services.broker.subjects import BEACONS, beacon_subject, class_filter, stream_name

    assert job_subject("small", "batch", "acme", "eu-west") == "rgen.eu-west.small.batch.acme"
    assert class_filter("small", "batch", "a") == "rgen.a.small.batch.*"
    assert (stream_name("small"), stream_name("small", "eu-west")) == (
        "GEN_SMALL", "GEN_SMALL_EU_WEST")
    assert (done_bucket(), done_bucket("a")) == ("BROKER_DONE", "BROKER_DONE_A")
    assert beacon_subject("small", "a") == "broker.tier.small.a" and BEACONS == "broker.tier.>"
    config = stream_config("small", QueueLimits(region="a"))
    assert (config.name, config.subjects) == ("GEN_SMALL_A", ["rgen.a.small.>"])
    assert config.placement is not None and config.placement.cluster == "a"
    assert stream_config("small", QueueLimits()).subjects == ["gen.small.>"]  # as before
    with pytest.raises(ValueError):
        job_subject("small", "batch", "acme", "Bad.Region")


def test_compose_runs_the_broker_with_real_settings() -> None:
    broker = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]["broker"]
    fields = set(BrokerSettings.model_fields)
    for key in broker["environment"]:
        if key.startswith("CMESH_BROKER_"):
            assert key.removeprefix("CMESH_BROKER_").lower() in fields
    tiers = parse_backends(broker["environment"]["CMESH_BROKER_BACKENDS"])
    assert set(tiers) == {"small", "large"}


def test_the_local_stack_starts_the_broker_after_the_backends_it_serves() -> None:
    from cmesh.stack import default_specs, select_specs

    specs = {s.name: s for s in select_specs(default_specs(), set())}
    assert specs["broker"].needs == ("backend-large", "backend-small")
    assert specs["broker"].args == ("--backends",
                                    "large={backend-large};small={backend-small}")
    only = {s.name: s for s in select_specs(default_specs(), {"backend-small", "broker"})}
    assert set(only) == {"backend-small", "broker"}
    assert only["broker"].args == ("--backends", "small={backend-small}")
    with pytest.raises(ValueError):
        select_specs(default_specs(), {"broker", "cache"})


def test_jobs_convert_to_and_from_the_domain_request() -> None:
    from core.generation import Conversation, GenerationRequest, Sampling, Turn
    from services.common.convert import generation_request_to_job, job_to_generation_request

    request = GenerationRequest(
        prompt="And then?", conversation=Conversation("Be brief.", (Turn("user", "Hi"),)),
        sampling=Sampling(temperature=0.0, max_tokens=12), chat=True, logprobs=True,
        request_id="r1")
    job = generation_request_to_job(request, "small", tenant="acme", batch=True)
    assert job.priority == broker_pb2.PRIORITY_BATCH and job.tenant == "acme"
    assert job_to_generation_request(job) == request
    job.conversation.turns[0].role = 0
    job.reply_subject = "_INBOX.x"
    with pytest.raises(FieldError) as err:
        check_job(job, "small")
    assert err.value.field == "conversation.turns[0].role"
