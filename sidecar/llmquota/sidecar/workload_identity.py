"""The Pod this sidecar serves, and the workload policies of its namespace.

The identity is read once, at start, from what the injection webhook set: the downward
API files (`--identity-dir`: `namespace`, `labels`) and `--workload`. Never from a
request. The namespace's workload policies are read from the store on the first keyless
request and cached until the operator (or the standalone loader) announces a change of
that namespace's, or the change feed restarts.
"""

from __future__ import annotations

from pathlib import Path

from llmquota.policy import keyspace
from llmquota.policy.identity import (
    PodIdentity,
    parse_downward_labels,
    request_policy,
)
from llmquota.policy.limits import ResolvedPolicy
from llmquota.store import QuotaStore
from llmquota.store.workloads import note_workload, read_workload_policies

__all__ = ["WorkloadPolicies", "read_identity"]


def read_identity(identity_dir: Path | None, workload: str | None) -> PodIdentity | None:
    """The Pod's identity; None without both flags (keyless requests then get 401).

    OSError when the directory lacks its files: a sidecar told to be a workload that
    cannot say which must not start.
    """
    if identity_dir is None or workload is None:
        return None
    namespace = (identity_dir / "namespace").read_text().strip()
    labels = parse_downward_labels((identity_dir / "labels").read_text())
    return PodIdentity(namespace=namespace, labels=labels, workload=workload)


class WorkloadPolicies:
    """The policy a request gets: its key's, else this Pod's workload policy."""

    def __init__(self, store: QuotaStore, identity: PodIdentity | None) -> None:
        self.store = store
        self.identity = identity
        # This Pod's workload policy (None: no Team selects it), computed once per read of
        # the namespace's policies; `_read` says whether there is one to use.
        self._policy: ResolvedPolicy | None = None
        self._read = False
        self._generation = 0
        self._noted: set[str] = set()  # teams this process told it charges

    async def policy_for(self, key_policy: ResolvedPolicy | None) -> ResolvedPolicy | None:
        """`identity.request_policy`: a known key's policy wins, else the workload's."""
        if key_policy is not None or self.identity is None:
            return key_policy
        policy = await self._workload_policy(self.identity)
        if policy is None or policy.team is None or policy.team in self._noted:
            return policy
        team_scope = next((scope for scope in policy.scopes if scope.kind == "team"), None)
        if team_scope is not None:  # an incomplete policy only refuses: nothing to note
            await note_workload(self.store, team_scope.tag, team_scope.id, policy.scopes[-1].id)
            self._noted.add(policy.team)
        return policy

    async def _workload_policy(self, identity: PodIdentity) -> ResolvedPolicy | None:
        if self._read:
            return self._policy
        generation = self._generation
        read = await read_workload_policies(self.store, identity.namespace)
        policy = request_policy(None, identity, read)
        if generation == self._generation:  # no change was announced meanwhile
            self._policy, self._read = policy, True
        return policy

    def invalidate(self, change: str) -> None:
        """Drop the cached policies on a change of this namespace's (`*`: of anything).

        After `*` (the feed restarted: the store may have lost its data) the workload is
        noted again on its next request.
        """
        if self.identity is None:
            return
        if change == "*":
            self._noted.clear()
        elif change != keyspace.workload_policies_change(self.identity.namespace):
            return
        self._generation += 1
        self._policy, self._read = None, False
