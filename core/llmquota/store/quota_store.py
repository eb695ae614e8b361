"""QuotaStore: policies, admission, settlement and counters in Redis.

Hot path: one round trip to admit (EVALSHA admit) and one to settle. Everything else
(policy writes, status reads, re-seeding) is the operator's, off the request path.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Self

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from llmquota.durations import calendar_bounds, window_spec
from llmquota.policy import keyspace
from llmquota.policy.admission import AdmissionCall, counter_amount
from llmquota.policy.limits import BudgetLimits, ResolvedPolicy
from llmquota.store.connection import connect
from llmquota.store.errors import REDIS_ERRORS, store_call, store_error
from llmquota.store.fast_path import FastScripts, LuaScript
from llmquota.store.replication import ReplicaWait, run_replicated
from llmquota.store.scripts import Scripts, script_source

__all__ = ["BudgetCounter", "QuotaStore"]

MODEL_SPEND_PREFIX = "s:"


@dataclass(frozen=True, slots=True)
class BudgetCounter:
    """A budget counter as stored: the window it counts, settled and reserved nano-USD."""

    window_start_ms: int | None
    spend_nanos: int = 0
    reserved_nanos: int = 0
    model_spend_nanos: dict[str, int] = field(default_factory=dict)


class QuotaStore:
    """llmquota's view of one Redis: the only module that talks to it.

    Its calls raise the store's errors (`store.errors`), never redis-py's."""

    def __init__(
        self,
        redis: Redis,
        clock_ms: Callable[[], int] | None = None,
        replica_wait: ReplicaWait | None = None,
        fast_path: FastScripts | None = None,
    ) -> None:
        """Wrap a client; `clock_ms` replaces Redis TIME in the scripts (tests only);
        `replica_wait`: every settle waits for replicas to hold it (`--redis-wait-replicas`);
        `fast_path`: admit, settle and abort go through it instead (`store.fast_path`)."""
        self.redis = redis
        self._clock_ms = clock_ms
        self._replica_wait = replica_wait
        self._scripts = Scripts.register(redis)
        self._fast = fast_path
        self._hot = {
            name: LuaScript.of(script_source(name)) for name in ("admit", "settle", "abort")
        }
        # The KEYS each request admitted here was given, until it is settled or aborted.
        self._in_flight: dict[str, list[str]] = {}

    @classmethod
    def from_url(
        cls,
        url: str,
        clock_ms: Callable[[], int] | None = None,
        replica_wait: ReplicaWait | None = None,
        **options: Any,
    ) -> Self:
        """Connect (lazily) to the Redis at `url`, any form `--redis` takes.

        `options` are those of `llmquota.store.connection.connect` (`password_file`,
        `pool_timeout`, socket timeouts, `max_connections`); RedisUrlError for a URL
        llmquota cannot use. The hot path's scripts take `store.fast_path` where the URL
        allows (`redis://`, `unix://`), with the same timeouts.
        """
        fast = FastScripts.for_url(
            url,
            password_file=options.get("password_file"),
            timeout_s=options.get("socket_timeout"),
            connect_timeout_s=options.get("socket_connect_timeout"),
        )
        return cls(connect(url, **options), clock_ms, replica_wait, fast)

    async def close(self) -> None:
        """Close the client and its pool."""
        await self.redis.aclose()
        if self._fast is not None:
            await self._fast.close()

    async def _run_hot(self, name: str, keys: list[str], args: list[str | int]) -> Any:
        """admit, settle or abort: on the fast path when there is one, else redis-py's."""
        if self._fast is not None:
            return await self._fast.run(self._hot[name], keys, args)
        script: AsyncScript = getattr(self._scripts, name)
        return await script(keys=keys, args=args)

    @store_call
    async def ping(self) -> None:
        """Raise if Redis cannot be reached."""
        await self.redis.ping()

    def _clock(self) -> int:
        return self._clock_ms() if self._clock_ms is not None else 0

    def _local_now_ms(self) -> int:
        """This process's clock (or the injected one), around which calendar windows'
        boundaries are handed to the scripts; they pick the window Redis' clock is in."""
        return self._clock_ms() if self._clock_ms is not None else int(time.time() * 1000)

    @store_call
    async def now_ms(self) -> int:
        """The store's clock: Redis TIME (or the injected test clock)."""
        if self._clock_ms is not None:
            return self._clock_ms()
        seconds, micros = await self.redis.time()
        return int(seconds) * 1000 + int(micros) // 1000

    # Policies -------------------------------------------------------------------------

    @store_call
    async def put_policy(self, policy: ResolvedPolicy) -> bool:
        """Write a key's policy and tell every sidecar; False when it was already so."""
        encoded = policy.model_dump_json()
        name = keyspace.policy_key(policy.key_hash)
        previous = await self.redis.set(name, encoded, get=True)
        if previous == encoded.encode():
            return False
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.sadd(keyspace.POLICY_INDEX, policy.key_hash)
            pipe.publish(keyspace.POLICY_CHANNEL, policy.key_hash)
            await pipe.execute()
        return True

    @store_call
    async def delete_policy(self, key_hash: str) -> None:
        """Remove a key's policy; sidecars refuse the key from then on."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(keyspace.policy_key(key_hash))
            pipe.srem(keyspace.POLICY_INDEX, key_hash)
            pipe.publish(keyspace.POLICY_CHANNEL, key_hash)
            await pipe.execute()

    @store_call
    async def get_policy(self, key_hash: str) -> ResolvedPolicy | None:
        """A key's policy, or None for an unknown key."""
        encoded = await self.redis.get(keyspace.policy_key(key_hash))
        return None if encoded is None else ResolvedPolicy.model_validate_json(encoded)

    @store_call
    async def policy_hashes(self) -> set[str]:
        """The key hashes that have a policy."""
        members = await self.redis.smembers(keyspace.POLICY_INDEX)
        return {_text(member) for member in members}

    @store_call
    async def policy_owners(self, key_hashes: Iterable[str]) -> dict[str, tuple[str, str]]:
        """(namespace, ApiKey name) each policy names, in one round trip.

        Read loosely (two fields of the JSON), so a policy of another llmquota version is
        still attributed; a hash whose policy is gone, or names no owner, is left out.
        """
        hashes = list(key_hashes)
        if not hashes:
            return {}
        encoded = await self.redis.mget([keyspace.policy_key(key_hash) for key_hash in hashes])
        owners: dict[str, tuple[str, str]] = {}
        for key_hash, raw in zip(hashes, encoded, strict=True):
            if raw is None:
                continue
            try:
                fields = json.loads(raw)
                owners[key_hash] = (str(fields["namespace"]), str(fields["key_name"]))
            except (ValueError, KeyError, TypeError):
                continue
        return owners

    async def policy_changes(self) -> AsyncIterator[str]:
        """Key hashes whose policy changed, as they are published (`*`: all of them).

        The first item is `*` once subscribed, so a (re)subscribing cache drops what it
        holds: a change published while it was not listening is not missed.
        """
        pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(keyspace.POLICY_CHANNEL)
            yield "*"
            async for message in pubsub.listen():
                if message["type"] == "message":
                    yield message["data"].decode()
        except REDIS_ERRORS as error:
            raise store_error(error) from error
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py lacks a hint

    # Enforcement ----------------------------------------------------------------------

    # admit and settle run once per request: their errors are translated inline, where
    # `@store_call` would cost the hot path a coroutine more.

    async def admit(self, call: AdmissionCall) -> list[Any]:
        """Run admit.lua; the raw answer is read by `policy.decision.interpret_admit`.

        An admitted request's KEYS are kept until it is settled or aborted: those scripts
        are given the same KEYS, since a script may touch only keys it is given."""
        script_call = call.script_call(self._local_now_ms())
        try:
            result: list[Any] = await self._run_hot(
                "admit", script_call.keys, [script_call.spec_json, self._clock()]
            )
        except REDIS_ERRORS as error:
            raise store_error(error) from error
        if int(result[0]) == 1:
            self._in_flight[call.request_id] = script_call.keys
        return result

    async def settle(self, request_id: str, cost_nanos: int, tokens: int) -> int:
        """Charge the real cost and tokens; 1 settled, 2 late (lease expired), 0 unknown
        (never admitted here, or already settled or aborted).

        Both are held to what one step may add (`counter_amount`), which the script checks.
        """
        keys = self._in_flight.get(request_id)
        if keys is None:
            return 0
        args: list[str | int] = [counter_amount(cost_nanos), counter_amount(tokens), self._clock()]
        try:
            if self._replica_wait is not None:
                settled = await run_replicated(
                    self.redis, self._scripts.settle, keys, args, self._replica_wait
                )
            else:
                settled = int(await self._run_hot("settle", keys, args))
        except REDIS_ERRORS as error:
            raise store_error(error) from error
        del self._in_flight[request_id]
        return settled

    @store_call
    async def abort(self, request_id: str) -> int:
        """Free a reservation without charge; 1 when freed."""
        keys = self._in_flight.get(request_id)
        if keys is None:
            return 0
        aborted = int(await self._run_hot("abort", keys, [self._clock()]))
        del self._in_flight[request_id]
        return aborted

    @store_call
    async def renew(self, request_ids: Sequence[str], lease_ms: int) -> int:
        """Extend the leases of requests still in flight; how many were still held.

        One script run per hash tag, pipelined: one round trip."""
        records: dict[str, list[str]] = {}
        for request_id in request_ids:
            keys = self._in_flight.get(request_id)
            if keys is not None:
                leases, record, *_ = keys
                records.setdefault(leases, []).append(record)
        if not records:
            return 0
        async with self.redis.pipeline(transaction=False) as pipe:
            for leases, members in records.items():
                await self._scripts.renew(
                    keys=[leases], args=[lease_ms, self._clock(), *members], client=pipe
                )
            renewed: list[int] = await pipe.execute()
        return sum(int(count) for count in renewed)

    @store_call
    async def sweep(self, limit: int = 1000) -> int:
        """Free expired leases (their holder died) under every hash tag; how many were
        freed. The leases zsets are found by SCAN, so no list of tags has to be kept."""
        freed = 0
        async for leases in self.redis.scan_iter(
            match=keyspace.LEASES_PATTERN, count=1000, _type="zset"
        ):
            freed += int(await self._scripts.sweep(keys=[leases], args=[self._clock(), limit]))
        return freed

    # Counters for status --------------------------------------------------------------

    @store_call
    async def read_budgets(self, scopes: Iterable[tuple[str, str]]) -> list[BudgetCounter]:
        """The budget counters of (tag, scope id) pairs, in one round trip."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for tag, scope_id in scopes:
                pipe.hgetall(keyspace.budget_key(tag, scope_id))
            raw_counters: list[dict[bytes, bytes]] = await pipe.execute()
        return [_budget_counter(raw) for raw in raw_counters]

    @store_call
    async def read_window_budgets(
        self, windows: Iterable[tuple[str, str, str]]
    ) -> list[BudgetCounter]:
        """The counters of further budget windows, by (tag, scope id, window wire form),
        in one round trip (a budget's main window is `read_budgets`')."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for tag, scope_id, window in windows:
                pipe.hgetall(keyspace.budget_window_key(tag, scope_id, window))
            raw_counters: list[dict[bytes, bytes]] = await pipe.execute()
        return [_budget_counter(raw) for raw in raw_counters]

    @store_call
    async def seed_budget(
        self,
        tag: str,
        scope_id: str,
        window: tuple[int, int],
        spend_nanos: int,
        model_spend_nanos: Mapping[str, int],
    ) -> bool:
        """Restore a lost counter from a status; False when the counter exists."""
        pairs = [value for item in model_spend_nanos.items() for value in item]
        seeded = await self._scripts.seed(
            keys=[keyspace.budget_key(tag, scope_id)],
            args=[window[0], window[1], spend_nanos, *pairs],
        )
        return bool(seeded)

    # Standalone mode: store generation, creation times, spend snapshots -----------------

    @store_call
    async def generation(self) -> str | None:
        """The generation marker, or None when the store has none (new, or wiped)."""
        marker = await self.redis.get(keyspace.GENERATION)
        return None if marker is None else _text(marker)

    @store_call
    async def claim_generation(self, proposed: str) -> str:
        """Set the generation marker unless one exists (first writer wins); the marker."""
        previous = await self.redis.set(keyspace.GENERATION, proposed, nx=True, get=True)
        return proposed if not isinstance(previous, bytes | str) else _text(previous)

    @store_call
    async def claim_created(self, proposed_ms: Mapping[str, int]) -> dict[str, int]:
        """Record each subject's creation time unless one is recorded (first writer wins,
        so replicas loading the same manifest agree); the recorded times."""
        subjects = sorted(proposed_ms)
        async with self.redis.pipeline(transaction=False) as pipe:
            for subject in subjects:
                pipe.set(keyspace.created_key(subject), proposed_ms[subject], nx=True, get=True)
            previous: list[bytes | None] = await pipe.execute()
        return {
            subject: proposed_ms[subject] if before is None else int(before)
            for subject, before in zip(subjects, previous, strict=True)
        }

    @store_call
    async def generation_and_budgets(
        self, scopes: Sequence[tuple[str, str]]
    ) -> tuple[str | None, list[BudgetCounter]]:
        """The generation marker and the budget counters of (tag, scope id) pairs, in one
        round trip; the marker is None unless it was the same before and after the
        counters were read, so counters read across a wipe are never taken for good ones.
        (Not a MULTI: the keys live in several Cluster slots.)"""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.get(keyspace.GENERATION)
            for tag, scope_id in scopes:
                pipe.hgetall(keyspace.budget_key(tag, scope_id))
            pipe.get(keyspace.GENERATION)
            before, *raw_counters, after = await pipe.execute()
        marker = None if before is None or before != after else _text(before)
        return marker, [_budget_counter(raw) for raw in raw_counters]

    @store_call
    async def restore_budget(
        self,
        tag: str,
        scope_id: str,
        limits: BudgetLimits,
        counter: BudgetCounter,
        generation: str,
    ) -> bool:
        """Add a snapshot of a counter back after a wipe, once per generation, if its
        window is still the current one; True when added."""
        if counter.window_start_ms is None:
            return False
        pairs = [value for item in counter.model_spend_nanos.items() for value in item]
        spec = window_spec(limits.window)
        bounds = calendar_bounds(spec, self._local_now_ms()) if spec.needs_bounds else []
        restored = await self._scripts.restore(
            keys=[keyspace.budget_key(tag, scope_id)],
            args=[
                limits.window,
                limits.anchor_ms,
                ",".join(str(bound) for bound in bounds),
                counter.window_start_ms,
                counter.spend_nanos,
                generation,
                self._clock(),
                *pairs,
            ],
        )
        return bool(restored)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _budget_counter(raw: Mapping[bytes, bytes]) -> BudgetCounter:
    if not raw:
        return BudgetCounter(window_start_ms=None)
    fields = {name.decode(): int(value) for name, value in raw.items()}
    return BudgetCounter(
        window_start_ms=fields.get("win"),
        spend_nanos=fields.get("spend", 0),
        reserved_nanos=fields.get("resv", 0),
        model_spend_nanos={
            name.removeprefix(MODEL_SPEND_PREFIX): value
            for name, value in fields.items()
            if name.startswith(MODEL_SPEND_PREFIX)
        },
    )
