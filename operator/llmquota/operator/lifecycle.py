"""The operator's life: kopf settings, login, and what startup opens and cleanup closes.

Startup puts the clients (Redis, Kubernetes) and the bookkeeping into kopf's `memo` and
starts the status sync, the Redis watchdog, the sweep for orphaned policies and the
mirroring of the sidecar's configuration; cleanup stops and closes them. Login hands
kopf an API session with a connection limit.
"""

from __future__ import annotations

import asyncio
import logging
import warnings
from typing import Any

import aiohttp
import kopf

from llmquota.operator.config import OperatorConfig
from llmquota.operator.kube import Kube
from llmquota.operator.mirroring import keep_mirrors, mirror_sources
from llmquota.operator.orphans import keep_policies_owned
from llmquota.operator.recovery import watch_store
from llmquota.operator.state import MEMO_KEY, Indexes, OperatorState
from llmquota.operator.status_sync import sync_statuses
from llmquota.store import QuotaStore

__all__ = [
    "API_CONNECTIONS",
    "PREFIX",
    "REDIS_CONNECTIONS",
    "cleanup",
    "configure_settings",
    "login",
    "startup",
]

PREFIX = "llmquota.dev"
"""Annotation prefix for kopf's progress and diff-base."""


def configure_settings(settings: kopf.OperatorSettings, config: OperatorConfig) -> None:
    """kopf's settings for llmquota: annotations for state, our own webhook config."""
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=PREFIX, key="last-handled-configuration"
    )
    # No handler needs a finalizer (deletions are watched, and `orphans` catches those
    # missed), so kopf adds none and removes the one older versions added.
    settings.persistence.finalizer = f"{PREFIX}/finalizer"
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    settings.execution.max_workers = 20  # the thread pool of sync handlers (the webhook)
    if config.webhook_cert_dir is not None:
        settings.admission.server = kopf.WebhookServer(
            addr=config.webhook_listen.host,
            port=config.webhook_listen.port,
            certfile=str(config.webhook_cert_dir / "tls.crt"),
            pkeyfile=str(config.webhook_cert_dir / "tls.key"),
        )
    # The Helm chart owns the MutatingWebhookConfiguration.
    settings.admission.managed = None


REDIS_CONNECTIONS = 32
REDIS_POOL_TIMEOUT_S = 30.0
REDIS_SOCKET_TIMEOUT_S = 10.0


async def startup(
    config: OperatorConfig, settings: kopf.OperatorSettings, memo: kopf.Memo, **kwargs: Any
) -> None:
    """Clients into memo; the status sync and the Redis watchdog started."""
    configure_settings(settings, config)
    store = QuotaStore.from_url(
        config.redis_url,
        password_file=config.redis_password_file,
        max_connections=REDIS_CONNECTIONS,
        # Thousands of handlers run together at a cold start: callers wait for a free
        # connection instead of failing with "Too many connections".
        pool_timeout=REDIS_POOL_TIMEOUT_S,
        # A primary that stops answering (a failover, a partition) fails the call, to be
        # retried by kopf or the next sync, instead of hanging the operator on it.
        socket_timeout=REDIS_SOCKET_TIMEOUT_S,
        socket_connect_timeout=REDIS_SOCKET_TIMEOUT_S,
    )
    state = OperatorState(
        config=config, store=store, kube=await Kube.connect(), indexes=Indexes.of(kwargs)
    )
    memo[MEMO_KEY] = state
    loop = asyncio.get_running_loop()
    state.background.append(loop.create_task(watch_store(state)))
    state.background.append(loop.create_task(sync_statuses(state)))
    state.background.append(loop.create_task(keep_policies_owned(state)))
    if mirror_sources(config):
        state.background.append(loop.create_task(keep_mirrors(state)))


async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    """Close what startup opened."""
    state = memo.get(MEMO_KEY)
    if not isinstance(state, OperatorState):
        return
    for task in state.background:
        task.cancel()
    await asyncio.gather(*state.background, return_exceptions=True)
    await state.store.close()
    await state.kube.close()


API_CONNECTIONS = 100
"""Connections kopf may hold to the API server at once (watches included)."""


async def login(**kwargs: Any) -> kopf.AiohttpSession | None:
    """In-cluster service account when in a Pod, else the current kubeconfig.

    A registry of our own does not get kopf's default login handlers, so this is them;
    and it hands kopf a session with a connection limit: kopf's own has none, and at a
    cold start it opened one TLS connection per object being processed (thousands,
    ~0.4 MB each, all kept alive afterwards).
    """
    info: kopf.ConnectionInfo | None = kopf.login_with_service_account(**kwargs)
    info = info or kopf.login_with_kubeconfig(**kwargs)
    if info is None:
        return None
    with warnings.catch_warnings():
        # kopf deprecates basic auth; pass it through like kopf does.
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="kopf")
        basic_auth = info.as_aiohttp_basic_auth()
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=API_CONNECTIONS, ssl=info.as_ssl_context()),
        headers=info.as_http_headers(),
        auth=basic_auth,
        proxy=info.proxy_url,
        trust_env=info.trust_env,
    )
    return kopf.AiohttpSession(
        server=info.server,
        default_namespace=info.default_namespace,
        expiration=info.expiration,
        priority=info.priority,
        aiohttp_session=session,
    )
