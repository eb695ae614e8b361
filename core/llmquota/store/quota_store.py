"""QuotaStore: policies, admission, settlement and counters in Redis.

Hot path: one round trip to admit (EVALSHA admit) and one to settle. Everything else
(policy writes, status reads, re-seeding) is the operator's, off the request path.

On a Redis Cluster a script runs in one hash slot, so an admission runs once per hash tag
its counters carry (`AdmissionCall.slot_calls`: the global budget's first, then the
team's, then a Dynamic pool's), each reserving in its slot; when one refuses, the slots
reserved before are freed. A refusal therefore never leaves a reservation behind, and
while one is held elsewhere for a moment it can only refuse other requests early, never
let one through: the no-overshoot bound holds. That costs one round trip per further
slot, only for requests that span slots; settle and abort run per slot likewise.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Self

from redis.asyncio import Redis, RedisCluster
from redis.commands.core import AsyncScript

from llmquota.durations import calendar_bounds, window_spec
from llmquota.policy import keyspace
from llmquota.policy.admission import AdmissionCall, counter_amount
from llmquota.policy.decision import ADMITTED, tightest_admitted
from llmquota.policy.limits import BudgetLimits, ResolvedPolicy, read_policy
from llmquota.store.connection import RedisUrlError, connect
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
        redis: Redis | RedisCluster,
        clock_ms: Callable[[], int] | None = None,
        replica_wait: ReplicaWait | None = None,
        fast_path: FastScripts | None = None,
    ) -> None:
        """Wrap a client; `clock_ms` replaces Redis TIME in the scripts (tests only);
        `replica_wait`: every settle waits for replicas to hold it (`--redis-wait-replicas`;
        not on a Cluster, where WAIT would reach another connection than the settle);
        `fast_path`: admit, settle and abort go through it instead (`store.fast_path`)."""
        self.redis = redis
        self.cluster = isinstance(redis, RedisCluster)
        if self.cluster and replica_wait is not None:
            msg = "--redis-wait-replicas needs one primary (redis:// or redis+sentinel://)"
            raise RedisUrlError(msg)
        self._clock_ms = clock_ms
        self._replica_wait = replica_wait
        self._scripts = Scripts.register(redis)
        self._fast = fast_path
        self._loading = asyncio.Lock()
        self._scripts_loaded = asyncio.Event()
        self._hot = {
            name: LuaScript.of(script_source(name)) for name in ("admit", "settle", "abort")
        }
        # The KEYS of each slot a request admitted here reserved in, until it is settled
        # or aborted: those scripts are given the same KEYS.
        self._in_flight: dict[str, list[list[str]]] = {}

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
        if isinstance(self.redis, RedisCluster) and not self._scripts_loaded.is_set():
            await self._load_scripts(self.redis)
        script: AsyncScript = getattr(self._scripts, name)
        return await script(keys=keys, args=args)

    async def _load_scripts(self, cluster: RedisCluster) -> None:
        """Load every script on every primary once, before the first call: redis-py's
        Cluster client fails calls (a connection torn down under another) when many
        concurrent first calls all meet NOSCRIPT and load the script at once."""
        async with self._loading:
            if not self._scripts_loaded.is_set():
                for script in self._scripts.all():
                    await cluster.script_load(script.script)
                self._scripts_loaded.set()

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
        """Write a key's policy and tell every sidecar; False when it was already so.

        The index entry is written either way: on a Cluster the index can be lost with
        its node while the policy, on another, survives."""
        encoded = policy.model_dump_json()
        name = keyspace.policy_key(policy.key_hash)
        # No MULTI, and one command after the other: the policy, the index and the channel
        # live in different Cluster slots (and a Cluster pipeline takes no PUBLISH).
        previous = await self.redis.set(name, encoded, get=True)
        await self.redis.sadd(keyspace.POLICY_INDEX, policy.key_hash)
        if previous == encoded.encode():
            return False
        await self.redis.publish(keyspace.POLICY_CHANNEL, policy.key_hash)
        return True

    @store_call
    async def delete_policy(self, key_hash: str) -> None:
        """Remove a key's policy; sidecars refuse the key from then on. The index entry
        goes first, so that whoever sees the policy gone sees its entry gone too (one
        command after the other, as in `put_policy`); the policy goes before the news of
        it, so a sidecar told of the change cannot read it back."""
        await self.redis.srem(keyspace.POLICY_INDEX, key_hash)
        await self.redis.delete(keyspace.policy_key(key_hash))
        await self.redis.publish(keyspace.POLICY_CHANNEL, key_hash)

    @store_call
    async def get_policy(self, key_hash: str) -> ResolvedPolicy | None:
        """A key's policy, or None for an unknown key."""
        encoded = await self.redis.get(keyspace.policy_key(key_hash))
        return None if encoded is None else read_policy(encoded, key_hash)

    @store_call
    async def policy_hashes(self) -> set[str]:
        """The key hashes that have a policy."""
        members = await self.redis.smembers(keyspace.POLICY_INDEX)
        return {_text(member) for member in members}

    @store_call
    async def missing_policies(self, key_hashes: Iterable[str]) -> set[str]:
        """Of `key_hashes`, those whose policy or index entry is gone (a Redis, or one
        Cluster node, that lost its data). Run every second by the operator, so it reads
        no policy, only whether each exists."""
        hashes = list(dict.fromkeys(key_hashes))
        indexed = await self.policy_hashes()
        names = {keyspace.policy_key(key_hash): key_hash for key_hash in hashes}
        gone = {names[name] for name in await self._missing(list(names))}
        return gone | {key_hash for key_hash in hashes if key_hash not in indexed}

    @store_call
    async def missing_budgets(self, scopes: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
        """Of (tag, scope id) pairs, those whose budget counter does not exist."""
        names = {keyspace.budget_key(tag, scope_id): (tag, scope_id) for tag, scope_id in scopes}
        return [names[name] for name in await self._missing(list(names))]

    async def _missing(self, names: list[str]) -> list[str]:
        """Of distinct key names, those that do not exist: one EXISTS over all of them
        (split by slot on a Cluster), and only when some are gone, one per key."""
        if not names or await self.redis.exists(*names) == len(names):
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.exists(name)
            found: list[int] = await pipe.execute()
        return [name for name, exists in zip(names, found, strict=True) if not exists]

    @store_call
    async def policy_owners(self, key_hashes: Iterable[str]) -> dict[str, tuple[str, str]]:
        """(namespace, ApiKey name) each policy names, in one round trip.

        Read loosely (two fields of the JSON), so a policy of another llmquota version is
        still attributed; a hash whose policy is gone, or names no owner, is left out.
        """
        hashes = list(key_hashes)
        if not hashes:
            return {}
        encoded = await self._mget([keyspace.policy_key(key_hash) for key_hash in hashes])
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
        holds: a change published while it was not listening is not missed. On a Cluster
        the subscription is held on one node (PUBLISH reaches every node); when that node
        fails, the feed ends with an error and the caller subscribes again.
        """
        if isinstance(self.redis, RedisCluster):
            try:
                await self.redis.initialize()  # its pub/sub picks a node from the slot map
            except REDIS_ERRORS as error:
                raise store_error(error) from error
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
        """Run admit.lua, once per hash slot on a Cluster; the raw answer (the tightest of
        the slots' when all admit) is read by `policy.decision.interpret_admit`.

        An admitted request's KEYS are kept until it is settled or aborted: those scripts
        are given the same KEYS, since a script may touch only keys it is given."""
        now_ms = self._local_now_ms()
        script_calls = call.slot_calls(now_ms) if self.cluster else [call.script_call(now_ms)]
        reserved: list[list[str]] = []
        answers: list[list[Any]] = []
        try:
            for script_call in script_calls:
                answer: list[Any] = await self._run_hot(
                    "admit", script_call.keys, [script_call.spec_json, self._clock()]
                )
                if int(answer[0]) != ADMITTED:
                    await self._abort_slots(reserved, refused=True)
                    return answer
                reserved.append(script_call.keys)
                answers.append(answer)
        except BaseException as error:
            # A slot that did not answer: free what the others hold now, not at expiry.
            with contextlib.suppress(*REDIS_ERRORS):
                await self._abort_slots(reserved, refused=True)
            if isinstance(error, REDIS_ERRORS):
                raise store_error(error) from error
            raise
        self._in_flight[call.request_id] = reserved
        return answers[0] if len(answers) == 1 else tightest_admitted(answers)

    async def settle(self, request_id: str, cost_nanos: int, tokens: int) -> int:
        """Charge the real cost and tokens; 1 settled, 2 late (lease expired), 0 unknown
        (never admitted here, or already settled or aborted).

        Both are held to what one step may add (`counter_amount`), which the script checks.
        """
        slots = self._in_flight.get(request_id)
        if slots is None:
            return 0
        args: list[str | int] = [counter_amount(cost_nanos), counter_amount(tokens), self._clock()]
        try:
            answers = [await self._settle_slot(keys, args) for keys in slots]
        except REDIS_ERRORS as error:
            raise store_error(error) from error
        del self._in_flight[request_id]
        return max(answers, key=_SETTLE_RANK.index)

    async def _settle_slot(self, keys: list[str], args: list[str | int]) -> int:
        if self._replica_wait is not None and isinstance(self.redis, Redis):
            return await run_replicated(
                self.redis, self._scripts.settle, keys, args, self._replica_wait
            )
        return int(await self._run_hot("settle", keys, args))

    @store_call
    async def abort(self, request_id: str) -> int:
        """Free a reservation without charge; 1 when freed."""
        slots = self._in_flight.get(request_id)
        if slots is None:
            return 0
        aborted = await self._abort_slots(slots)
        del self._in_flight[request_id]
        return aborted

    async def _abort_slots(self, slots: Sequence[list[str]], *, refused: bool = False) -> int:
        """Free what a request holds in each of `slots`; 1 when anything was freed.
        `refused`: another slot refused it, so its requests are not counted either."""
        args: list[str | int] = [self._clock(), int(refused)]
        freed = [int(await self._run_hot("abort", keys, args)) for keys in slots]
        return max(freed, default=0)

    @store_call
    async def renew(self, request_ids: Sequence[str], lease_ms: int) -> int:
        """Extend the leases of requests still in flight; how many were still held (on a
        Cluster a request holds one in each slot it reserved in).

        One script run per hash tag: pipelined on one Redis (one round trip), side by side
        on a Cluster."""
        records: dict[str, list[str]] = {}
        for request_id in request_ids:
            for leases, record, *_ in self._in_flight.get(request_id, []):
                records.setdefault(leases, []).append(record)
        if not records:
            return 0
        if isinstance(self.redis, RedisCluster):
            renewed = await asyncio.gather(
                *(
                    self._scripts.renew(keys=[leases], args=[lease_ms, self._clock(), *members])
                    for leases, members in records.items()
                )
            )
        else:
            async with self.redis.pipeline(transaction=False) as pipe:
                for leases, members in records.items():
                    await self._scripts.renew(
                        keys=[leases], args=[lease_ms, self._clock(), *members], client=pipe
                    )
                renewed = await pipe.execute()
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

    async def _mget(self, keys: list[str]) -> list[Any]:
        """GET of many keys in one call; on a Cluster one per slot, side by side."""
        if isinstance(self.redis, RedisCluster):
            return await self.redis.mget_nonatomic(keys)
        return await self.redis.mget(keys)

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


# Settle answers, least to most telling: unknown, settled, late (its lease had expired).
_SETTLE_RANK = (0, 1, 2)


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
