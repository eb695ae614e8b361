"""Keyless access: Teams' workload policies in Redis, and the spend of their workloads.

A Team with a `workloadSelector` gets one `WorkloadPolicy` in its namespace's hash
(`store.workloads`); sidecars of matching Pods charge keyless requests under it
(`policy.identity`). The operator does not watch Pods: which workloads exist is the
sidecars' to know, and they note each workload that charges a team, which is what
`status.workloadSpend` is read from.

A Team whose workload policy cannot be resolved (its workloadBudgetRef names no Budget,
the global budget is missing) gets one that refuses, naming the field, rather than none:
its workloads would otherwise be told they have no key, or be let through unbudgeted.

Changes are followed at once (a Team, a Budget, a RateLimit or a BudgetOverride handled),
and the status sync applies every selecting Team again on each pass: a policy lost with
Redis, or one whose write failed, is back within a status interval.
"""

from __future__ import annotations

import logging

from llmquota.models import LabelSelector, Team
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
from llmquota.store import StoreError
from llmquota.store.workloads import (
    delete_workload_policy,
    put_workload_policy,
    workload_policies,
    workloads_of,
)

__all__ = ["WorkloadService"]

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
    selector = team.spec.workload_selector or LabelSelector()
    namespace, name = team.metadata.namespace, team.metadata.name
    return WorkloadPolicy(
        namespace=namespace,
        team=name,
        selector=selector,
        team_policy=ResolvedPolicy(
            key_hash="",
            namespace=namespace,
            key_name="",
            team=name,
            refusal=PolicyRefusal(reason=error.reason, message=f"{error.field}: {error.message}"),
        ),
        workload_budget=COUNT_ONLY,
    )


class WorkloadService:
    """The workload policies of Teams, and their workloads' spend."""

    def __init__(self, state: OperatorState) -> None:
        """Work on the process context `state`."""
        self._state = state

    async def apply(self, team: Team, *, without: Gone | None = None) -> None:
        """Write the Team's workload policy, or withdraw it when it selects no workloads.

        `without` hides an object being deleted, as for keys.
        """
        state = self._state
        namespace, name = team.metadata.namespace, team.metadata.name
        if team.spec.workload_selector is None:
            await delete_workload_policy(state.store, namespace, name)
            return
        error = _global_budget_problem(state, without)
        policy: WorkloadPolicy | None = None
        if error is None:
            try:
                policy = resolve_workload_policy(
                    team, state.indexes.objects(namespace, without=without), state.global_budget()
                )
            except ResolutionError as problem:
                error = problem
        if policy is None or error is not None:
            policy = _refusing(team, error or _UNRESOLVED)
        if await put_workload_policy(state.store, policy):
            logger.info("workload policy of Team %s/%s written", namespace, name)

    async def follow(self, kind: str, namespace: str, name: str, *, deleted: bool = False) -> int:
        """After `kind/name` changed (or goes away): the Teams whose workload policy may
        depend on it applied again; how many Teams select workloads there.

        A deleted Team's policy is withdrawn. Otherwise every selecting Team of the
        namespace (of every namespace, for the global budget) is applied again: resolving
        is pure and an unchanged policy is not written, so that is cheaper than working
        out which ones depend on what.
        """
        state = self._state
        if kind == "Team" and deleted:
            await delete_workload_policy(state.store, namespace, name)
            return 0
        teams = (
            state.indexes.teams.everywhere()
            if kind == "Budget" and state.config.global_budget == (namespace, name)
            else state.indexes.teams.of(namespace)
        )
        without: Gone | None = (kind, namespace, name) if deleted else None
        selecting = [team for team in teams if team.spec.workload_selector is not None]
        for team in selecting:
            try:
                await self.apply(team, without=without)
            except StoreError as error:
                logger.warning(
                    "workload policy of Team %s/%s not written, the status sync retries: %s",
                    team.metadata.namespace, team.metadata.name, error,
                )  # fmt: skip
        return len(selecting)

    async def spend(self, team: Team, now_ms: int) -> dict[str, float]:
        """USD per workload in its current window, the WORKLOAD_SPEND_TOP that spent most.

        Keyed by the workload as the metrics' `workload` label has it (`deployment/chatbot`).
        """
        if team.spec.workload_selector is None:
            return {}
        store = self._state.store
        namespace, name = team.metadata.namespace, team.metadata.name
        written = next(
            (p for p in await workload_policies(store, namespace) if p.team == name), None
        )
        if written is None:
            return {}
        tag, team_id = f"{namespace}/{name}", team_scope_id(namespace, name)
        scope_ids = sorted(await workloads_of(store, tag, team_id))
        counters = await store.read_budgets([(tag, scope_id) for scope_id in scope_ids])
        window_start = written.workload_budget.window_at(now_ms).start_ms
        prefix = workload_scope_id(namespace, name, "")
        spent = {
            scope_id.removeprefix(prefix): usd(counter.spend_nanos)
            for scope_id, counter in zip(scope_ids, counters, strict=True)
            if counter.window_start_ms == window_start and counter.spend_nanos > 0
        }
        top = sorted(spent.items(), key=lambda item: (-item[1], item[0]))[:WORKLOAD_SPEND_TOP]
        return dict(top)


_UNRESOLVED = ResolutionError("spec", "Unresolved", "the workload policy could not be resolved")
