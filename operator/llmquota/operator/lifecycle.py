"""The operator's life: kopf's run, its settings, login, startup and cleanup.

`serve` runs kopf with llmquota's registry (`handlers.build_registry`) beside the
health/metrics server. Startup has the factory open the clients (Redis, Kubernetes),
build the services and start the status sync, the Redis watchdog, the sweep for
orphaned policies and the mirroring of the sidecar's configuration, and puts the
factory into kopf's `memo`; cleanup stops and closes them. Login hands kopf an API
session with a connection limit.
"""

from __future__ import annotations

import asyncio
import logging
import warnings
from typing import Any

import aiohttp
import kopf

from llmquota.operator.config import OperatorConfig
from llmquota.operator.factory import Factory
from llmquota.operator.metrics import HealthServer, free_loopback_port
from llmquota.operator.state import MEMO_KEY

__all__ = [
    "API_CONNECTIONS",
    "PREFIX",
    "cleanup",
    "configure_settings",
    "login",
    "serve",
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
    # No handler needs a finalizer (deletions are watched, and `services.orphan_sweep` catches those
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


async def startup(
    config: OperatorConfig, settings: kopf.OperatorSettings, memo: kopf.Memo, **indexes: Any
) -> None:
    """The factory into memo (clients opened, services built); the loops started."""
    configure_settings(settings, config)
    factory = await Factory.create(config, indexes)
    memo[MEMO_KEY] = factory
    factory.start()


async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    """Close what startup opened."""
    factory = memo.get(MEMO_KEY)
    if isinstance(factory, Factory):
        await factory.aclose()


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


async def serve(
    config: OperatorConfig,
    registry: kopf.OperatorRegistry,
    stop_flag: asyncio.Event | None = None,
) -> None:
    """Run kopf with llmquota's registry, plus the /healthz + /metrics server."""
    liveness = f"http://127.0.0.1:{free_loopback_port()}/healthz"
    health = HealthServer(config.health_listen, liveness)
    await health.start()
    try:
        await kopf.operator(
            registry=registry,
            clusterwide=not config.namespaces,
            namespaces=config.namespaces,
            standalone=config.peering is None,
            peering_name=config.peering,
            liveness_endpoint=liveness,
            stop_flag=stop_flag,
            memo=kopf.Memo(),
        )
    finally:
        await health.stop()
