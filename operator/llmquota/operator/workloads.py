"""Keyless access: Teams' workload policies in Redis, and the spend of their workloads.

A Team with a `workloadSelector` gets one `WorkloadPolicy` in its namespace's hash
(`store.workloads`); sidecars of matching Pods charge keyless requests under it
(`policy.identity`). The operator does not watch Pods: which workloads exist is the
sidecars' to know, and they note each workload that charges a team, which is what
`status.workloadSpend` is read from.

A Team whose workload policy cannot be resolved (its workloadBudgetRef names no Budget,
the global budget is missing) gets one that refuses, naming the field, rather than none:
its workloads would otherwise be told they have no key, or be let through unbudgeted.
"""

from __future__ import annotations

import logging

from redis.exceptions import RedisError

from llmquota.models import Team
from llmquota.models.team import WORKLOAD_SPEND_TOP
from llmquota.operator.state import Gone, OperatorState
from llmquota.policy.identity import WorkloadPolicy, workload_scope_id
from llmquota.policy.limits import PolicyRefusal, ResolvedPolicy, usd
from llmquota.policy.resolve import (
    COUNT_ONLY,
    ResolutionError,
    resolve_workload_policy,
    team_scope_id,
)
from llmquota.store.workloads import (
    delete_workload_policy,
    put_workload_policy,
    workload_policies,
    workloads_of,
)

__all__ = [
    "apply_team_workloads",
    "forget_team_workloads",
    "refresh_namespace_workloads",
    "workload_spend",
]

logger = logging.getLogger(__name__)


def _global_budget_problem(state: OperatorState, without: Gone | None) -> ResolutionError | None:
    """A configured global budget that is missing: nothing may be let through without it."""
    if state.config.global_budget is None:
        return None
    namespace, name = state.config.global_budget
    if state.global_budget() is not None and without != ("Budget", namespace, name):
        return None
    return ResolutionError(
        "--global-budget",
        "GlobalBudgetNotFound",
        f"the global budget {namespace}/{name} was not found (is its namespace watched?)",
    )


def _refusing(team: Team, error: ResolutionError) -> WorkloadPolicy:
    """The workload policy of a Team whose limits cannot be resolved: it only refuses."""
    assert team.spec.workload_selector is not None
    namespace, name = team.metadata.namespace, team.metadata.name
    return WorkloadPolicy(
        namespace=namespace,
        team=name,
        selector=team.spec.workload_selector,
        team_policy=ResolvedPolicy(
            key_hash="",
            namespace=namespace,
            key_name="",
            team=name,
            refusal=PolicyRefusal(reason=error.reason, message=f"{error.field}: {error.message}"),
        ),
        workload_budget=COUNT_ONLY,
    )


async def apply_team_workloads(
    state: OperatorState, team: Team, *, without: Gone | None = None
) -> ResolutionError | None:
    """Write the Team's workload policy (or withdraw it: no selector); the problem, if any.

    `without` hides an object being deleted, as for keys.
    """
    namespace, name = team.metadata.namespace, team.metadata.name
    if team.spec.workload_selector is None:
        await delete_workload_policy(state.store, namespace, name)
        return None
    error = _global_budget_problem(state, without)
    policy: WorkloadPolicy | None = None
    if error is None:
        try:
            policy = resolve_workload_policy(
                team, state.indexes.objects(namespace, without=without), state.global_budget()
            )
        except ResolutionError as problem:
            error = problem
    if policy is None:
        policy = _refusing(team, error or ResolutionError("spec", "Unknown", "not resolvable"))
    if await put_workload_policy(state.store, policy):
        logger.info("workload policy of Team %s/%s written", namespace, name)
    return error


async def forget_team_workloads(state: OperatorState, namespace: str, name: str) -> None:
    """Withdraw a deleted Team's workload policy: its workloads' keyless requests get 401."""
    await delete_workload_policy(state.store, namespace, name)


async def refresh_namespace_workloads(
    state: OperatorState, namespace: str | None, *, without: Gone | None = None
) -> int:
    """Re-apply the workload policies of a namespace's Teams (None: every namespace), after
    a Budget, RateLimit or BudgetOverride there changed; how many Teams select workloads.

    Resolving is pure and a policy that did not change is not written again, so
    re-applying all of them is cheaper than working out which ones depend on what.
    """
    teams = (
        state.indexes.teams.everywhere() if namespace is None else state.indexes.teams.of(namespace)
    )
    selecting = [team for team in teams if team.spec.workload_selector is not None]
    for team in selecting:
        if without == ("Team", team.metadata.namespace, team.metadata.name):
            continue
        try:
            await apply_team_workloads(state, team, without=without)
        except RedisError as error:
            logger.warning(
                "workload policy of Team %s/%s not written, will retry: %s",
                team.metadata.namespace, team.metadata.name, error,
            )  # fmt: skip
    return len(selecting)


async def workload_spend(state: OperatorState, team: Team, now_ms: int) -> dict[str, float]:
    """USD per workload in its current window, the WORKLOAD_SPEND_TOP that spent most.

    Keyed by the workload as the metrics' `workload` label has it (`deployment/chatbot`).
    """
    if team.spec.workload_selector is None:
        return {}
    namespace, name = team.metadata.namespace, team.metadata.name
    written = next(
        (p for p in await workload_policies(state.store, namespace) if p.team == name), None
    )
    if written is None:
        return {}
    tag, team_id = f"{namespace}/{name}", team_scope_id(namespace, name)
    scope_ids = sorted(await workloads_of(state.store, tag, team_id))
    counters = await state.store.read_budgets([(tag, scope_id) for scope_id in scope_ids])
    window_start = written.workload_budget.window_at(now_ms).start_ms
    prefix = workload_scope_id(namespace, name, "")
    spent = {
        scope_id.removeprefix(prefix): usd(counter.spend_nanos)
        for scope_id, counter in zip(scope_ids, counters, strict=True)
        if counter.window_start_ms == window_start and counter.spend_nanos > 0
    }
    top = sorted(spent.items(), key=lambda item: (-item[1], item[0]))[:WORKLOAD_SPEND_TOP]
    return dict(top)
