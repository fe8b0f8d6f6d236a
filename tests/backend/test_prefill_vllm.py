"""Prefill statistics from the real vLLM SmolLM2 backend, against transformers' own forward."""

from __future__ import annotations

import math
import time
import uuid

import grpc
import pytest

from protos.backend.v1 import backend_pb2, backend_pb2_grpc
from protos.common.v1 import common_pb2
from tests.support import ServiceProcess

pytestmark = pytest.mark.vllm

QUESTION = ("Which of the following is a prime number?\nA. 21\nB. 27\nC. 29\nD. 33\n"
            "Answer:")


@pytest.fixture(scope="module")
def stub(smollm2_backend: ServiceProcess):
    with grpc.insecure_channel(smollm2_backend.address) as channel:
        yield backend_pb2_grpc.BackendStub(channel)


@pytest.fixture(scope="module")
def reference(smollm2_path):
    """SmolLM2 in transformers, float32: logprobs of every prompt token and of the next."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2_path)
    model = AutoModelForCausalLM.from_pretrained(smollm2_path, dtype=torch.float32).eval()

    def run(prompt: str) -> tuple[list[float], torch.Tensor, list[int]]:
        ids = tok(prompt)["input_ids"]
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0].float()
        logp = torch.log_softmax(logits, dim=-1)
        own = [float(logp[i - 1, ids[i]]) for i in range(1, len(ids))]
        return own, logp[-1], ids

    return run, tok


def prefill(stub, prompt: str, **kw) -> backend_pb2.PrefillStats:
    return stub.Prefill(backend_pb2.PrefillRequest(prompt=prompt, **kw), timeout=120)


def test_raw_prompt_statistics_match_a_transformers_forward(stub, reference) -> None:
    run, tok = reference
    stats = prefill(stub, QUESTION)
    own, next_logp, ids = run(QUESTION)

    assert stats.prompt_tokens == len(ids)
    assert stats.scored_tokens == len(ids) - 1
    assert stats.mean_logprob == pytest.approx(sum(own) / len(own), abs=0.02)
    assert stats.min_logprob == pytest.approx(min(own), abs=0.05)
    top = next_logp.topk(20)
    p = top.values.exp()
    q = p / p.sum()
    assert stats.top_logprobs == 20
    assert stats.top_mass == pytest.approx(float(p.sum()), abs=0.01)
    assert stats.next_entropy == pytest.approx(float(-(q * q.log()).sum()), abs=0.02)
    letters = {"A": 0.0, "B": 0.0, "C": 0.0, "D": 0.0}
    for value, token in zip(p.tolist(), top.indices.tolist(), strict=True):
        text = tok.decode([token]).strip()
        if text in letters:
            letters[text] += value
    assert dict(stats.option_mass) == pytest.approx(letters, abs=0.01)
    assert sum(stats.option_mass.values()) > 0.01  # option letters are among its candidates


def test_chat_prompt_scores_only_its_own_tokens(stub) -> None:
    raw = prefill(stub, QUESTION)
    chat = prefill(stub, QUESTION, chat=True)
    assert chat.prompt_tokens > raw.prompt_tokens + 10  # the template's system turn
    assert chat.scored_tokens == raw.prompt_tokens  # its first token now has context
    assert chat.min_logprob <= chat.mean_logprob <= 0.0


def test_gibberish_is_less_likely_than_prose_and_a_smaller_top_is_honoured(stub) -> None:
    prose = prefill(stub, "The cat sat on the mat and looked out of the window at the rain.")
    noise = prefill(stub, "mat window the qz rain xylo cat blorft of sat looked 7 on vv",
                    top_logprobs=5)
    assert noise.mean_logprob < prose.mean_logprob - 1.0
    assert noise.top_logprobs == 5
    assert 0.0 <= noise.next_entropy <= math.log(5) + 1e-6


@pytest.mark.parametrize(("field", "request_"), [
    ("prompt", backend_pb2.PrefillRequest(prompt=" ")),
    ("prompt", backend_pb2.PrefillRequest(prompt="word " * 3000)),
    ("top_logprobs", backend_pb2.PrefillRequest(prompt=QUESTION, top_logprobs=21)),
    ("conversation.turns[0].role", backend_pb2.PrefillRequest(
        prompt=QUESTION, conversation=common_pb2.Conversation(
            turns=[common_pb2.Turn(content="hi")]))),
], ids=["blank", "too-long", "top", "role"])
def test_bad_prefill_input_is_invalid_argument_naming_the_field(stub, field, request_) -> None:
    with pytest.raises(grpc.RpcError) as err:
        stub.Prefill(request_, timeout=60)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in err.value.details()
    assert prefill(stub, QUESTION).prompt_tokens > 0


def _prefix_counters(service: ServiceProcess) -> tuple[float, float]:
    return (service.metric("backend_prefix_cache_queried_tokens_total"),
            service.metric("backend_prefix_cache_hit_tokens_total"))


def _generate_counting_hits(stub, service: ServiceProcess, prompt: str) -> float:
    """Prompt tokens of one Generate found in the prefix cache (backend counters)."""
    queried, hits = _prefix_counters(service)
    request = backend_pb2.GenerateRequest(
        prompt=prompt, chat=True, sampling=common_pb2.SamplingParams(max_tokens=2))
    stub.Complete(request, timeout=120)
    deadline = time.monotonic() + 5
    while _prefix_counters(service)[0] == queried and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)
    return _prefix_counters(service)[1] - hits


def test_generate_right_after_prefill_reuses_its_cached_blocks(stub, smollm2_backend) -> None:
    story = " ".join(f"On day {i} the ship sailed {i * 7 % 13} miles north." for i in range(40))
    block = 128  # vLLM's CPU block size: only whole blocks are cached
    fresh = f"[{uuid.uuid4().hex}] {story}"
    stats = prefill(stub, fresh, chat=True)
    assert stats.prompt_tokens > 3 * block
    reused = _generate_counting_hits(stub, smollm2_backend, fresh)
    cold = _generate_counting_hits(stub, smollm2_backend, f"[{uuid.uuid4().hex}] {story}")
    assert reused >= block * ((stats.prompt_tokens - 1) // block)
    assert cold == 0
