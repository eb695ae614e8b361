"""ApiKeys to policies in Redis: the key's Secret, its resolution, its status.

Every method is idempotent: handlers, the status sync and the Secret watch may all call
the same one for the same key, in any order, and the last call wins. One lock per key
(`OperatorState.lock`) keeps a key's handler and its Secret's handler from interleaving.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubernetes_asyncio.client.exceptions import ApiException

from llmquota.models import ApiKey, Budget
from llmquota.operator.rules.conditions import Observation
from llmquota.operator.rules.key_secrets import (
    KEY_FIELD,
    generate_key,
    key_from_secret,
    owned_secret,
    secret_name_of,
)
from llmquota.operator.rules.readiness import incomplete_policy, ready_observation
from llmquota.operator.rules.status_view import key_state_observations
from llmquota.operator.services.status_writer import StatusWriter
from llmquota.operator.state import Gone, KeyRecord, OperatorState
from llmquota.operator.storage.kubernetes import KubeObject
from llmquota.policy.key_hash import hash_key, key_hint
from llmquota.policy.resolve import ResolutionError, resolve_key_policy
from llmquota.store import StoreError

__all__ = ["REFRESH_CONCURRENCY", "KeyOutcome", "KeyService"]

logger = logging.getLogger(__name__)

REFRESH_CONCURRENCY = 16
"""Keys re-applied at once when a Team or Budget that many keys use changes."""


@dataclass(frozen=True, slots=True)
class KeyOutcome:
    """What reconciling an ApiKey found: its Ready condition and the key's hint."""

    ready: Observation
    key_hint: str | None


class KeyService:
    """Applies, refreshes, rotates and forgets ApiKeys."""

    def __init__(self, state: OperatorState, status_writer: StatusWriter) -> None:
        """Work on the process context `state`; statuses go out through `status_writer`."""
        self._state = state
        self._status = status_writer

    async def reconcile(
        self, apikey: ApiKey, status: Mapping[str, Any], *, into: MutableMapping[str, Any]
    ) -> bool:
        """A key's handler: apply it and put its status into kopf's patch; whether Ready."""
        outcome = await self.apply(apikey)
        await self._write_status(apikey, status, outcome, into=into)
        return outcome.ready.status == "True"

    async def apply(
        self, apikey: ApiKey, *, without: Gone | None = None, known_key: bool = False
    ) -> KeyOutcome:
        """Resolve an ApiKey and write its policy; the old hash goes on rotation.

        `without` (kind, namespace, name) hides an object being deleted from resolution.
        `known_key`: the key is the one last written (a dependency changed, not the
        Secret), so its Secret need not be read again: that API call was most of the time
        from a Budget's change to the new policy in Redis. Rotations come through the
        Secret watch.
        """
        state = self._state
        namespace, name = apikey.metadata.namespace, apikey.metadata.name
        async with state.lock(namespace, name):
            known = state.keys.get((namespace, name)) if known_key else None
            if known is not None and known.key_hint is not None:
                key_hash, hint = known.key_hash, known.key_hint
            else:
                key = await self._ensure_key(apikey)
                key_hash, hint = hash_key(key), key_hint(key)
            team = None
            if apikey.spec.team is not None and without != ("Team", namespace, apikey.spec.team):
                team = state.indexes.teams.named(namespace, apikey.spec.team)
            error: ResolutionError | None = None
            try:
                policy = resolve_key_policy(
                    apikey,
                    key_hash,
                    team,
                    state.indexes.objects(namespace, without=without),
                    self._global_budget(without),
                )
            except ResolutionError as problem:
                error = problem
                policy = incomplete_policy(apikey, key_hash, problem)
            previous = state.keys.get((namespace, name))
            await state.store.put_policy(policy)
            # Recorded only once written, so the Redis-loss watchdog never mistakes a
            # policy on its way for a lost one.
            state.keys[(namespace, name)] = KeyRecord(key_hash, policy, hint)
            if previous is not None and previous.key_hash != key_hash:
                await state.store.delete_policy(previous.key_hash)
        return KeyOutcome(ready_observation(error, "policy written to Redis"), hint)

    async def forget(self, namespace: str, name: str, secret_name: str) -> None:
        """Withdraw a deleted ApiKey's policy (by the hash written, and the Secret's now)."""
        state = self._state
        async with state.lock(namespace, name):
            record = state.keys.pop((namespace, name), None)
            hashes = {record.key_hash} if record is not None else set()
            key = key_from_secret(await state.kubernetes.read_secret(namespace, secret_name))
            if key is not None:
                hashes.add(hash_key(key))
            for key_hash in hashes:
                await state.store.delete_policy(key_hash)

    async def rotate(self, namespace: str, secret_name: str, key: str | None) -> None:
        """A key Secret now holds `key` (None: gone or empty): re-apply the keys it changed.

        A live key whose Secret is gone gets a new one generated.
        """
        new_hash = None if key is None else hash_key(key)
        stale = [
            apikey
            for apikey in self._state.indexes.keys_using_secret(namespace, secret_name)
            if self._rotated(namespace, apikey.metadata.name, new_hash)
        ]
        await self.refresh(stale)

    def _rotated(self, namespace: str, name: str, new_hash: str | None) -> bool:
        """Whether a key's Secret now differs from the hash written (gone: only if known)."""
        record = self._state.keys.get((namespace, name))
        if new_hash is None:
            return record is not None
        return record is None or record.key_hash != new_hash

    async def refresh(
        self, apikeys: list[ApiKey], *, without: Gone | None = None, known_key: bool = False
    ) -> None:
        """Re-apply ApiKeys other than the handled object and patch their status directly.

        Concurrently (up to REFRESH_CONCURRENCY), so a Budget used by a thousand keys is
        not a thousand Redis and API round trips in a row. A key that fails (Redis or the
        API server away) is marked stale, for the status sync to apply again; the others
        go on. `known_key`: see `apply`.
        """
        slots = asyncio.Semaphore(REFRESH_CONCURRENCY)

        async def refresh(apikey: ApiKey) -> None:
            ref = (apikey.metadata.namespace, apikey.metadata.name)
            async with slots:
                try:
                    outcome = await self.apply(apikey, without=without, known_key=known_key)
                    shown = (
                        apikey.status.model_dump(by_alias=True, mode="json")
                        if apikey.status
                        else {}
                    )
                    await self._write_status(apikey, shown, outcome)
                except (StoreError, ApiException, OSError) as error:
                    logger.warning("refreshing ApiKey %s/%s failed, will retry: %s", *ref, error)
                    self._state.stale.add(ref)

        await asyncio.gather(*(refresh(apikey) for apikey in apikeys))

    async def _write_status(
        self,
        apikey: ApiKey,
        current: Mapping[str, Any],
        outcome: KeyOutcome,
        *,
        into: MutableMapping[str, Any] | None = None,
    ) -> None:
        """keyHint, observedGeneration, Ready, Expired and Blocked (spend is the sync's)."""
        now = datetime.now(UTC)
        observations = [
            outcome.ready,
            *key_state_observations(
                expires=apikey.spec.expires, blocked=apikey.spec.blocked, now=now
            ),
        ]
        fields = {"observedGeneration": apikey.metadata.generation, "keyHint": outcome.key_hint}
        await self._status.write(
            KubeObject.of(apikey), current, fields, observations, now=now, into=into
        )

    async def _ensure_key(self, apikey: ApiKey) -> str:
        """The key in the ApiKey's Secret, generating one (in a Secret it owns) if absent."""
        kubernetes = self._state.kubernetes
        namespace, name = apikey.metadata.namespace, apikey.metadata.name
        secret_name = secret_name_of(name, apikey.spec.model_dump(by_alias=True))
        secret = await kubernetes.read_secret(namespace, secret_name)
        key = key_from_secret(secret)
        if key is not None:
            return key
        key = generate_key()
        if secret is None:
            owner = {
                "apiVersion": apikey.api_version,
                "kind": apikey.kind,
                "metadata": {"name": name, "uid": apikey.metadata.uid},
            }
            body = owned_secret(name=secret_name, namespace=namespace, key=key, owner=owner)
            if await kubernetes.create_secret(body):
                return key
            # Someone created it meanwhile: theirs wins.
            existing = key_from_secret(await kubernetes.read_secret(namespace, secret_name))
            if existing is not None:
                return existing
        encoded = base64.b64encode(key.encode()).decode()
        await kubernetes.patch_secret_data(namespace, secret_name, {KEY_FIELD: encoded})
        return key

    def _global_budget(self, without: Gone | None) -> Budget | None:
        """The --global-budget Budget; ResolutionError when it is configured but missing.

        Every request must count against it, so a key is not let through without it.
        """
        state = self._state
        if state.config.global_budget is None:
            return None
        namespace, name = state.config.global_budget
        budget = state.global_budget()
        if budget is None or without == ("Budget", namespace, name):
            raise ResolutionError(
                "--global-budget",
                "GlobalBudgetNotFound",
                f"the global budget {namespace}/{name} was not found (is its namespace watched?)",
            )
        return budget
