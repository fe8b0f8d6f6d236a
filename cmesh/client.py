"""A small gateway client for the CLI, the demo and the benchmark.

    text, meta = await ask(address, key, build_request("Hi"), on_text=print)
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format, struct_pb2
from rich.table import Table

from protos.common.v1 import common_pb2
from protos.gateway.v1 import gateway_pb2, gateway_pb2_grpc

DEFAULT_STATE = Path.home() / ".cache" / "cascade-mesh" / "stack"


def build_request(prompt: str, *, policy: str = "", force_tier: str = "",
                  thresholds: Sequence[str] = (), max_tokens: int | None = None,
                  temperature: float | None = None, skip_cache: bool = False,
                  no_store: bool = False, system: str = "",
                  turns: Sequence[tuple[str, str]] = ()) -> gateway_pb2.AskRequest:
    """An AskRequest; `thresholds` are `name=value` strings; `turns` are (role, text)."""
    request = gateway_pb2.AskRequest(prompt=prompt)
    request.policy.policy = policy
    request.policy.force_tier = force_tier
    request.policy.skip_cache = skip_cache
    request.policy.no_store = no_store
    if thresholds:
        values = struct_pb2.Struct()
        for item in thresholds:
            name, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"threshold {item!r}: expected name=value")
            values[name.strip()] = float(value)
        request.policy.thresholds.CopyFrom(values)
    if max_tokens is not None:
        request.sampling.max_tokens = max_tokens
    if temperature is not None:
        request.sampling.temperature = temperature
    request.conversation.system_prompt = system
    roles = {"user": common_pb2.ROLE_USER, "assistant": common_pb2.ROLE_ASSISTANT}
    for role, content in turns:
        request.conversation.turns.add(role=roles[role], content=content)
    return request


def read_key(state_dir: Path = DEFAULT_STATE, tenant: str = "dev") -> str:
    """`tenant`'s API key that `cmesh up` wrote."""
    return (state_dir / f"{tenant}-api-key").read_text().strip()


def read_stack(state_dir: Path = DEFAULT_STATE, tenant: str = "dev") -> tuple[str, str]:
    """The gateway address and `tenant`'s API key that `cmesh up` wrote."""
    addresses = json.loads((state_dir / "addresses.json").read_text())
    gateways = sorted(n for n in addresses if n.startswith("gateway"))  # or gateway-<region>
    if not gateways:
        raise FileNotFoundError(f"{state_dir}/addresses.json has no gateway; is `cmesh up` on?")
    return addresses["gateway" if "gateway" in addresses else gateways[0]], read_key(
        state_dir, tenant)


def read_door(state_dir: Path = DEFAULT_STATE, region: str = "") -> str:
    """The OpenAI base URL (http://127.0.0.1:PORT/v1) of the gateway `cmesh up` started
    (that of `region`'s gateway, with `--regions`)."""
    from cmesh.stack import door_port_file

    port = (state_dir / door_port_file(region)).read_text().strip()
    return f"http://127.0.0.1:{port}/v1"


async def ask(address: str, key: str, request: gateway_pb2.AskRequest,
              on_text: Callable[[str], None] | None = None, timeout: float = 300.0,
              channel: grpc.aio.Channel | None = None,
              ) -> tuple[str, gateway_pb2.ResponseMetadata]:
    """Stream one answer through the gateway; return its text and metadata."""
    own = channel is None
    channel = channel or grpc.aio.insecure_channel(address)
    try:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        parts: list[str] = []
        meta = gateway_pb2.ResponseMetadata()
        async for chunk in stub.AskStream(request, timeout=timeout,
                                          metadata=(("authorization", f"Bearer {key}"),)):
            if chunk.WhichOneof("kind") == "text_delta":
                parts.append(chunk.text_delta)
                if on_text is not None:
                    on_text(chunk.text_delta)
            else:
                meta = chunk.metadata
        return "".join(parts), meta
    finally:
        if own:
            await channel.close()


def metadata_dict(meta: gateway_pb2.ResponseMetadata) -> dict[str, Any]:
    """The metadata as plain JSON-ready values (every field, defaults included)."""
    return json_format.MessageToDict(meta, preserving_proto_field_name=True,
                                     always_print_fields_with_no_presence=True)


def metadata_table(meta: gateway_pb2.ResponseMetadata) -> Table:
    """How an answer was made, as a two-column table."""
    table = Table(show_header=False, title="answer metadata")
    table.add_column("field")
    table.add_column("value")
    rows = [
        ("tier", meta.tier or "-"),
        ("tiers tried", " -> ".join(meta.tiers_tried) or "(cache)"),
        ("policy", meta.policy),
        ("cache", f"{meta.cache_status} (similarity {meta.cache_similarity:.3f}, "
                  f"verifier {meta.cache_verifier_probability:.3f})"),
        ("classifier", f"{meta.classifier_status}"
                       + (f" (score {meta.classifier_score:.3f})"
                          if meta.classifier_status == "scored" else "")),
        ("confidence", f"{meta.confidence:.3f}"),
        ("tokens", f"{meta.usage.prompt_tokens} prompt + {meta.usage.completion_tokens} "
                   "completion"),
        ("cost / saving", f"{meta.cost:.5f} / {meta.saving:.5f}"),
        ("latency ms", ", ".join(f"{k.removesuffix('_ms')} {v:.0f}" for k, v in (
            ("cache_ms", meta.latency.cache_ms), ("classifier_ms", meta.latency.classifier_ms),
            ("first_token_ms", meta.latency.first_token_ms),
            ("generation_ms", meta.latency.generation_ms),
            ("total_ms", meta.latency.total_ms)))),
        ("request id", meta.request_id + (" (coalesced)" if meta.coalesced else "")),
    ]
    if meta.region:
        rows.insert(1, ("region", meta.region + (f" (failover: {meta.failover_reason})"
                                                 if meta.failover_reason else "")))
    for name, value in rows:
        table.add_row(name, value)
    return table
