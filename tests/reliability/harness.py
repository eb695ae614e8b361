"""What the reliability tests share: policies from the YAML a user writes, one admission
as the sidecar makes it, free ports and waiting on conditions with a deadline.

Policies come from `llmquota.manifests` (the standalone loader), so a test reads like the
manifests it guards and goes through the same resolution as production.
"""

from __future__ import annotations

import socket
import uuid

from tests.support.waiting import wait_until

from llmquota.manifests import ManifestResolver
from llmquota.policy.admission import RequestEstimate, admission_call
from llmquota.policy.decision import Admitted, Refused, interpret_admit
from llmquota.policy.limits import ResolvedPolicy
from llmquota.store import QuotaStore

__all__ = ["admit_once", "free_port", "policies_from_yaml", "wait_until"]


def policies_from_yaml(text: str) -> dict[str, ResolvedPolicy]:
    """The policies of every ApiKey in `text`, by ApiKey name; fails on any problem."""
    resolver = ManifestResolver()
    resolution = resolver.resolve(resolver.parse([("test.yaml", text)]))
    assert not resolution.problems, [str(problem) for problem in resolution.problems]
    return {policy.key_name: policy for policy in resolution.policies.values()}


async def admit_once(
    store: QuotaStore,
    policy: ResolvedPolicy,
    *,
    model: str = "gpt-4o-mini",
    cost_nanos: int = 10_000_000,
    tokens: int = 100,
    lease_ms: int = 30_000,
) -> tuple[str, Admitted | Refused]:
    """Admit one request as the sidecar does: its id and the decision."""
    request_id = uuid.uuid4().hex
    call = admission_call(policy, RequestEstimate(model, cost_nanos, tokens), request_id, lease_ms)
    return request_id, interpret_admit(await store.admit(call), call)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
