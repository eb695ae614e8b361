"""The one way the operator writes a status: compute, remember, send, tell.

Every status goes through `StatusWriter.write`: the pure `status_patch` cuts what the
object should show down to what differs from what it shows, the conditions written are
remembered per uid (a later write builds on them, not on a status the indexes may not
have caught up with), the patch goes out, and each condition flip worth telling becomes
one Event. A handler passes kopf's `patch.status` as `into`, so the status is sent in
the same API call as kopf's own patch; everything else (the status sync, keys refreshed
on behalf of another object) is patched through `KubernetesStorage`. Events always go
through the operator's own client: `kopf.event` works only inside a handler.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from datetime import datetime
from typing import Any

from kubernetes_asyncio.client.exceptions import ApiException

from llmquota.operator.rules.conditions import EventSpec, Observation, Transition, events_for
from llmquota.operator.rules.status_view import StatusUpdate, status_patch
from llmquota.operator.storage.kubernetes import KubeObject, KubernetesStorage

__all__ = ["EventRule", "StatusWriter"]

logger = logging.getLogger(__name__)

EventRule = Callable[[list[Transition]], Sequence[EventSpec]]
"""Which Events a write's condition flips make (`events_for`, or a kind's own rule)."""


class StatusWriter:
    """Writes statuses and posts the Events they imply (one per operator process)."""

    def __init__(
        self, kubernetes: KubernetesStorage, written: dict[str, list[dict[str, Any]]]
    ) -> None:
        """`written`: the conditions last written, by uid (kept in the process context)."""
        self._kubernetes = kubernetes
        self._written = written

    async def write(
        self,
        obj: KubeObject,
        current: Mapping[str, Any],
        fields: Mapping[str, Any],
        observations: list[Observation],
        *,
        now: datetime,
        into: MutableMapping[str, Any] | None = None,
        events: EventRule = events_for,
    ) -> StatusUpdate:
        """Bring `obj`'s status (now `current`) to `fields` and `observations`.

        Nothing is sent when nothing differs. `into`: a handler's kopf `patch.status`,
        which kopf sends when the handler returns.
        """
        update = status_patch(
            current,
            fields,
            observations,
            generation=obj.generation,
            now=now,
            known_conditions=self._written.get(obj.uid) if obj.uid else None,
        )
        if obj.uid:
            self._written[obj.uid] = update.conditions
        if into is not None:
            into.update(update.patch)
        elif update.patch:
            await self._kubernetes.patch_status(obj, update.patch)
        for event in events(update.transitions):
            await self.post_event(obj, *event)
        return update

    async def replace_fields(self, obj: KubeObject, fields: Mapping[str, Any]) -> None:
        """Send `fields` as they are, whatever the status shows (no conditions)."""
        await self._kubernetes.patch_status(obj, fields)

    async def post_event(self, obj: KubeObject, type_: str, reason: str, message: str) -> None:
        """One Event about `obj`. A lost Event is logged, not retried: the condition in
        the status says the same."""
        try:
            await self._kubernetes.post_event(obj, type_, reason, message)
        except (ApiException, OSError) as error:
            logger.warning("Event %s about %s not posted: %s", reason, obj.name, error)

    def forget(self, uid: str | None) -> None:
        """Drop what was written for a deleted object."""
        if uid:
            self._written.pop(uid, None)
