"""The committed generated code matches the .proto contracts."""

from __future__ import annotations

import subprocess
import sys

from tests.support import ROOT


def test_generated_code_is_up_to_date() -> None:
    result = subprocess.run(
        [sys.executable, "scripts/gen_protos.py", "--check"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr


def test_every_service_has_a_versioned_contract() -> None:
    from protos.backend.v1 import backend_pb2
    from protos.cache.v1 import cache_pb2
    from protos.classifier.v1 import classifier_pb2
    from protos.gateway.v1 import gateway_pb2

    services = {
        backend_pb2: "cascademesh.backend.v1.Backend",
        cache_pb2: "cascademesh.cache.v1.Cache",
        classifier_pb2: "cascademesh.classifier.v1.Classifier",
        gateway_pb2: "cascademesh.gateway.v1.Gateway",
    }
    for module, full_name in services.items():
        names = [s.full_name for s in module.DESCRIPTOR.services_by_name.values()]
        assert names == [full_name]
    gateway = gateway_pb2.DESCRIPTOR.services_by_name["Gateway"].methods_by_name
    assert gateway["AskStream"].server_streaming and not gateway["Ask"].server_streaming
