"""Keyless requests: who a Pod is, which Team's workload policy it falls under.

A sidecar injected into a Pod knows the Pod's identity from what the webhook set when
the Pod was admitted: its namespace and labels through the downward API, its workload
(the Deployment, StatefulSet, DaemonSet, CronJob or Job that owns it) as a flag
computed from the Pod's ownerReferences. Nothing in an HTTP request takes part, so a
client cannot claim another identity. The rules, pure:

- a known virtual key wins: its own policy applies, whatever the Pod;
- otherwise the Pod's identity is matched against the workload policies of its own
  namespace only (a Team's `workloadSelector` never reaches another namespace); of
  several matching Teams the first by name is charged;
- no key and no matching Team: 401, as for an unknown key; but when a workload policy
  of the namespace cannot be read by this version (written by a newer operator during a
  rolling upgrade), it might have matched, so the request gets the 503 PolicyUnreadable
  a key with an unreadable policy gets.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict

from llmquota.models import LabelSelector
from llmquota.policy.key_hash import hash_key
from llmquota.policy.limits import BudgetLimits, ResolvedPolicy, Scope, unreadable_refusal

__all__ = [
    "NamespacePolicies",
    "OwnerRef",
    "PodIdentity",
    "WorkloadPolicy",
    "parse_downward_labels",
    "request_policy",
    "selector_matches",
    "workload_of",
    "workload_policy_for",
    "workload_scope_id",
]

POD_TEMPLATE_HASH = "pod-template-hash"
"""The label the Deployment controller puts on a ReplicaSet's Pods: the suffix of the
ReplicaSet's name after the Deployment's."""

_MADE_BY = (("ReplicaSet", "Deployment"), ("Job", "CronJob"))
"""(owner, its controller) pairs where the controller is the workload."""


@dataclass(frozen=True, slots=True)
class OwnerRef:
    """The parts of an ownerReference the workload is read from."""

    kind: str
    name: str
    controller: bool = False


@dataclass(frozen=True, slots=True)
class PodIdentity:
    """What a sidecar knows of its Pod: namespace, labels, workload (`deployment/chatbot`)."""

    namespace: str
    labels: Mapping[str, str]
    workload: str


def workload_of(
    pod_name: str,
    owners: Sequence[OwnerRef],
    labels: Mapping[str, str],
    owner_of_owner: OwnerRef | None = None,
) -> str:
    """The workload owning a Pod, as `kind/name` in lower-case kind (kubectl's spelling).

    The controller among the Pod's owners is the workload, except that a ReplicaSet made
    by a Deployment stands for the Deployment (its name is the Deployment's plus
    `-<pod-template-hash>`, the label its Pods carry), and a Job made by a CronJob for the
    CronJob, when the Job's own controller (`owner_of_owner`) is known. A Pod without a
    controller is its own workload.
    """
    controller = next((owner for owner in owners if owner.controller), None)
    if controller is None:
        return f"pod/{pod_name}"
    kind, name = controller.kind, controller.name
    made_by = None if owner_of_owner is None else (kind, owner_of_owner.kind)
    if owner_of_owner is not None and owner_of_owner.controller and made_by in _MADE_BY:
        return f"{owner_of_owner.kind.lower()}/{owner_of_owner.name}"
    template_hash = labels.get(POD_TEMPLATE_HASH)
    if kind == "ReplicaSet" and template_hash and name.endswith(f"-{template_hash}"):
        return f"deployment/{name.removesuffix(f'-{template_hash}')}"
    return f"{kind.lower()}/{name}"


def parse_downward_labels(text: str) -> dict[str, str]:
    """The labels file of a downward API volume: one `key="value"` per line.

    The kubelet quotes values as Go's %q does; label values are letters, digits, `-`, `_`
    and `.` only, so the quotes are all there is to take off.
    """
    labels: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, quoted = line.partition("=")
        if sep and len(quoted) >= 2 and quoted[0] == quoted[-1] == '"':
            labels[key] = quoted[1:-1]
    return labels


def selector_matches(selector: LabelSelector, labels: Mapping[str, str]) -> bool:
    """Kubernetes' LabelSelector semantics: every matchLabels pair and every expression."""
    if any(labels.get(key) != value for key, value in selector.match_labels.items()):
        return False
    for requirement in selector.match_expressions:
        present = requirement.key in labels
        value = labels.get(requirement.key)
        holds = {
            "In": present and value in requirement.values,
            "NotIn": not present or value not in requirement.values,
            "Exists": present,
            "DoesNotExist": not present,
        }[requirement.operator]
        if not holds:
            return False
    return True


class WorkloadPolicy(BaseModel):
    """What the operator writes for a Team with a workloadSelector.

    `team_policy` is a key's policy without the key: the global budget, the team's
    budget, rate limits, pools, models and end-user templates. Each matched workload adds
    its own counter with `workload_budget` (count-only without a workloadBudgetRef), which
    plays the part of a key's own budget in admission.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    namespace: str
    team: str
    selector: LabelSelector
    team_policy: ResolvedPolicy
    workload_budget: BudgetLimits


@dataclass(frozen=True, slots=True)
class NamespacePolicies:
    """One namespace's workload policies as read: those this version can read, and the
    Teams whose policy it cannot, with the problem (a field it does not know, say)."""

    policies: Sequence[WorkloadPolicy]
    unreadable: Mapping[str, str]


def workload_scope_id(namespace: str, team: str, workload: str) -> str:
    """A workload's identity in counters and statuses: `workload/ns/team/kind/name`."""
    return f"workload/{namespace}/{team}/{workload}"


def workload_policy_for(
    identity: PodIdentity, policies: Sequence[WorkloadPolicy]
) -> ResolvedPolicy | None:
    """The policy a keyless request from this Pod gets, or None (401).

    Only policies of the Pod's own namespace are considered, whatever was handed in.
    """
    matching = sorted(
        (
            policy
            for policy in policies
            if policy.namespace == identity.namespace
            and selector_matches(policy.selector, identity.labels)
        ),
        key=lambda policy: policy.team,
    )
    if not matching:
        return None
    chosen = matching[0]
    base = chosen.team_policy
    team_scope = next((scope for scope in base.scopes if scope.kind == "team"), None)
    workload_scope = Scope(
        kind="key",
        id=workload_scope_id(identity.namespace, chosen.team, identity.workload),
        tag=team_scope.tag if team_scope is not None else f"{identity.namespace}/{chosen.team}",
        label=f"workload {identity.workload} of team {chosen.team}",
        budget=chosen.workload_budget,
    )
    return base.model_copy(
        update={
            # Stands for the workload wherever admission needs a key: what one workload
            # holds in flight at shared budgets, its member of a Dynamic pool.
            "key_hash": hash_key(workload_scope.id),
            "scopes": [*base.scopes, workload_scope],
        }
    )


def request_policy(
    key_policy: ResolvedPolicy | None, identity: PodIdentity | None, read: NamespacePolicies
) -> ResolvedPolicy | None:
    """A known key's policy; else the Pod's workload policy; else, when one of the
    namespace's could not be read, a policy refusing with why; else None (401)."""
    if key_policy is not None:
        return key_policy
    if identity is None:
        return None
    matched = workload_policy_for(identity, read.policies)
    if matched is not None or not read.unreadable:
        return matched
    team = min(read.unreadable)
    return ResolvedPolicy(
        key_hash=hash_key(workload_scope_id(identity.namespace, team, identity.workload)),
        namespace=identity.namespace,
        key_name="",
        team=team,
        refusal=unreadable_refusal(f"the workload policy of team {team}", read.unreadable[team]),
    )
