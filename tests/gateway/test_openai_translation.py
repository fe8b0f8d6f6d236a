"""OpenAI bodies -> Question, and errors -> OpenAI error objects, without any server."""

from __future__ import annotations

import pytest

from core.errors import FieldError, NotFound
from core.generation import Sampling, Turn
from services.gateway.admission import RateLimited
from services.gateway.domain import Metadata, TierUnavailable
from services.gateway.frontends.openai_render import cascade_field, error_response, meta_headers
from services.gateway.frontends.openai_schema import (
    ChatRequest,
    CompletionRequest,
    ResponsesRequest,
    chat_question,
    completion_question,
    parse,
    responses_question,
)

TIERS = ["small", "large"]


def chat(**body: object):
    body = {"model": "cascade-mesh", "messages": [{"role": "user", "content": "hi"}], **body}
    return chat_question(parse(ChatRequest, body), TIERS, "acme", "r1")


def test_chat_messages_become_system_prompt_turns_and_prompt() -> None:
    t = chat(messages=[
        {"role": "system", "content": "be brief"}, {"role": "developer", "content": "no lists"},
        {"role": "user", "content": [{"type": "text", "text": "Paris?"}]},
        {"role": "assistant", "content": "A city."}, {"role": "user", "content": "Size?"}],
        temperature=0.2, top_p=0.9, max_completion_tokens=40, max_tokens=10, stop="END",
        seed=7, user="end-user-9")
    q = t.question
    assert (q.tenant, q.request_id, q.prompt) == ("acme", "r1", "Size?")
    assert q.conversation.system_prompt == "be brief\n\nno lists"
    assert q.conversation.turns == (Turn("user", "Paris?"), Turn("assistant", "A city."))
    assert q.sampling == Sampling(temperature=0.2, top_p=0.9, max_tokens=40, seed=7,
                                  stop=("END",))
    assert q.force_tier == "" and not q.skip_cache
    assert t.param("sampling.max_tokens") == "max_completion_tokens"


def test_user_is_never_the_tenant_and_model_forces_a_tier() -> None:
    t = chat(model="large", user="globex")
    assert t.question.tenant == "acme" and t.question.force_tier == "large"


def test_cascade_extension_carries_the_policy_overrides() -> None:
    q = chat(cascade={"policy": "cascade", "thresholds": {"cascade.small": 0.9},
                      "skip_cache": True, "no_store": True}).question
    assert q.policy == "cascade" and q.thresholds == (("cascade.small", 0.9),)
    assert q.skip_cache and q.no_store


def test_unknown_model_is_not_found_and_a_conflicting_force_is_a_field() -> None:
    with pytest.raises(NotFound):
        chat(model="gpt-4o")
    with pytest.raises(FieldError) as err:
        chat(model="small", cascade={"force_tier": "large"})
    assert err.value.field == "cascade.force_tier"


@pytest.mark.parametrize(("body", "param"), [
    ({"n": 3}, "n"), ({"presence_penalty": 0.5}, "presence_penalty"),
    ({"tool_choice": "auto"}, "tool_choice"), ({"messages": []}, "messages"),
    ({"ignore_eos": True}, "ignore_eos"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "system", "content": "b"},
                   {"role": "user", "content": "c"}]}, "messages[1].role"),
    ({"temperature": "warm"}, "temperature"), ({"cascade": {"dice": 1}}, "cascade.dice"),
])
def test_refused_or_malformed_chat_bodies_name_the_param(body, param) -> None:
    with pytest.raises(FieldError) as err:
        chat(**body)
    assert err.value.field == param


def test_neutral_values_of_refused_params_are_accepted() -> None:
    q = chat(n=1, logprobs=False, tools=[], tool_choice="none", presence_penalty=0,
             response_format={"type": "text"}).question
    assert q.prompt == "hi"


def test_completion_prompt_is_one_string() -> None:
    t = completion_question(parse(CompletionRequest, {"model": "small", "prompt": ["x y"],
                                                      "max_tokens": 5}), TIERS, "a", "r")
    assert (t.question.prompt, t.question.sampling.max_tokens) == ("x y", 5)
    for prompt in (["a", "b"], [1, 2, 3]):
        with pytest.raises(FieldError) as err:
            completion_question(parse(CompletionRequest, {"model": "small", "prompt": prompt}),
                                TIERS, "a", "r")
        assert err.value.field == "prompt"
    with pytest.raises(FieldError) as err:
        parse(CompletionRequest, {"model": "small", "prompt": "x", "echo": True})
    assert err.value.field == "echo"


def test_responses_input_and_instructions() -> None:
    t = responses_question(parse(ResponsesRequest, {
        "model": "cascade-mesh", "instructions": "terse", "max_output_tokens": 9,
        "input": [{"role": "user", "content": [{"type": "input_text", "text": "q1"}]},
                  {"role": "assistant", "content": "a1"},
                  {"type": "message", "role": "user", "content": "q2"}]}), TIERS, "a", "r")
    q = t.question
    assert (q.conversation.system_prompt, q.prompt, q.sampling.max_tokens) == ("terse", "q2", 9)
    assert q.conversation.turns == (Turn("user", "q1"), Turn("assistant", "a1"))
    assert t.param("prompt") == "input" and t.param("sampling.max_tokens") == "max_output_tokens"
    for body, param in (({"store": True}, "store"), ({"background": True}, "background"),
                        ({"previous_response_id": "resp_1"}, "previous_response_id"),
                        ({"input": [{"type": "function_call_output"}]}, "input[0].type")):
        with pytest.raises(FieldError) as err:
            responses_question(parse(ResponsesRequest, {"model": "small", "input": "x",
                                                        **body}), TIERS, "a", "r")
        assert err.value.field == param


def test_orchestrator_fields_are_reported_under_the_wire_names() -> None:
    t = chat(max_tokens=5)
    for core, wire in (("sampling.temperature", "temperature"), ("prompt", "messages"),
                       ("sampling.max_tokens", "max_tokens"),
                       ("conversation.turns[0].role", "messages"),
                       ("policy.thresholds.route.large", "cascade.thresholds.route.large")):
        status, body, _ = error_response(FieldError(core, "bad"), t)
        assert (status, body["error"]["param"]) == (400, wire)
        assert body["error"]["message"] == f"{wire}: bad"


def test_error_objects_carry_status_tier_and_retry_after() -> None:
    status, body, headers = error_response(RateLimited("acme", 2.0, 0.5))
    assert status == 429 and headers == {"retry-after": "1", "retry-after-ms": "500"}
    assert body["error"]["type"] == "rate_limit_error"
    status, body, _ = error_response(TierUnavailable("large", "connection refused"))
    assert status == 503 and body["error"]["tier"] == "large"
    status, body, _ = error_response(KeyError("secret internals"))
    assert status == 500 and "secret" not in body["error"]["message"]


def test_metadata_flows_whole_into_the_cascade_field_and_headers() -> None:
    meta = Metadata(request_id="r1", tier="small", tiers_tried=["small", "large"],
                    policy="cascade", cache_status="miss", classifier_score=None,
                    coalesced=True, latency_ms={"total_ms": 12.5})
    field = cascade_field(meta)
    assert set(field) == set(Metadata.__dataclass_fields__)
    headers = meta_headers(meta)
    assert headers["x-cmesh-tiers-tried"] == "small,large"
    assert headers["x-cmesh-coalesced"] == "true"
    assert headers["x-cmesh-latency-total-ms"] == "12.500"
    assert "x-cmesh-classifier-score" not in headers
