"""Serving the app: aiohttp's server, with answers and limits of the sidecar's own.

`web.run_app` offers no hook for what happens before a request reaches the app
(aiohttp#3287), so the sidecar runs its own `AppRunner` whose server:

- answers a request aiohttp's parser refuses (bad request line, header, length,
  encoding) in OpenAI's error envelope, and logs it once at INFO without a traceback:
  such requests are the client's fault, and garbage must not flood the log with errors;
- closes a connection that has not delivered its next request's headers within
  `--header-timeout` (aiohttp's keep-alive timer, which runs from the connection's start
  and from the end of each response and is not reset by a dribbling client's bytes);
- holds at most `--max-connections`: past it, a new connection evicts the oldest one
  that is not in the middle of a request (an idle keep-alive or a dribbling client), or
  is answered 503 when every connection is busy, so descriptors never run out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from llmquota.sidecar.settings import SidecarSettings
from llmquota.sidecar.wire import error_body

__all__ = ["serve"]

logger = logging.getLogger("llmquota.sidecar.server")

_BUSY_BODY = error_body(
    "The sidecar holds its maximum of connections, all busy (--max-connections); retry shortly.",
    "service_unavailable",
    "too_many_connections",
)
_BUSY_RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Retry-After: 1\r\nConnection: close\r\nContent-Length: "
    + str(len(_BUSY_BODY)).encode()
    + b"\r\n\r\n"
    + _BUSY_BODY
)


class _Protocol(RequestHandler):
    """One client connection; errors aiohttp answers itself come out OpenAI-shaped."""

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """The envelope for a request the parser refused (400) or a handler's crash (500)."""
        if request.writer.output_size > 0:  # a response is under way: nothing to add
            raise ConnectionError("response already started; cannot send an error")
        if status >= 500:
            logger.error("request failed", exc_info=exc)
            body = error_body("The sidecar failed on this request.", "server_error", None)
        else:
            reason = message or str(exc) or "malformed request"
            logger.info(
                "invalid HTTP request: %s", reason, extra={"status": status, "peer": request.remote}
            )
            body = error_body(f"Invalid HTTP request: {reason}", "invalid_request_error", None)
        response = web.Response(body=body, status=status, content_type="application/json")
        response.force_close()
        return response


class _Server(web.Server):
    """aiohttp's server with `_Protocol` connections, at most `max_connections` of them."""

    def __init__(self, base: web.Server, max_connections: int, header_timeout: float) -> None:
        super().__init__(
            self._tracked,
            request_factory=base.request_factory,
            handler_cancellation=base.handler_cancellation,
        )
        self._app_handler = base.request_handler
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        # Open connections, oldest first, and those inside a request (never evicted).
        self._open: dict[RequestHandler, None] = {}
        self._busy: set[RequestHandler] = set()

    def __call__(self) -> RequestHandler:
        """A connection's protocol (aiohttp calls the server as the protocol factory)."""
        return _Protocol(
            self,
            loop=asyncio.get_running_loop(),
            # One structured line per request comes from the proxy; aiohttp logs none.
            access_log=None,  # type: ignore[arg-type]  # None is what turns it off
            keepalive_timeout=self.header_timeout,
            # Bodies are decoded by the proxy, bounded by --max-body-bytes as they inflate.
            auto_decompress=False,
        )

    async def _tracked(self, request: web.BaseRequest) -> web.StreamResponse:
        """The app's handler, with the connection marked busy (not evictable) meanwhile."""
        protocol = request.protocol
        self._busy.add(protocol)
        try:
            return await self._app_handler(request)
        finally:
            self._busy.discard(protocol)

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        """Keep the count at the cap: evict the oldest idle connection, or turn this away."""
        super().connection_made(handler, transport)
        self._open[handler] = None
        if len(self._open) <= self.max_connections:
            return
        idle = next((c for c in self._open if c is not handler and c not in self._busy), None)
        if idle is not None:
            del self._open[idle]
            idle.force_close()
            return
        del self._open[handler]
        logger.warning("connection refused: %d connections, all busy", self.max_connections)
        with contextlib.suppress(OSError, RuntimeError):
            transport.write(_BUSY_RESPONSE)
        handler.force_close()

    def connection_lost(self, handler: RequestHandler, exc: BaseException | None = None) -> None:
        """Forget a closed connection."""
        self._open.pop(handler, None)
        super().connection_lost(handler, exc)


class _Runner(web.AppRunner):
    """An AppRunner whose server is `_Server`."""

    def __init__(self, app: web.Application, settings: SidecarSettings) -> None:
        super().__init__(
            app,
            handle_signals=True,
            shutdown_timeout=settings.shutdown_timeout,
            handler_cancellation=True,  # a client that hangs up frees its reservation at once
        )
        self._settings = settings

    async def _make_server(self) -> web.Server:
        base = await super()._make_server()
        return _Server(base, self._settings.max_connections, self._settings.header_timeout)


def serve(
    app: web.Application,
    settings: SidecarSettings,
    loop: asyncio.AbstractEventLoop,
    ready: Callable[[], None],
) -> None:
    """Serve `app` on the settings' address until SIGTERM/SIGINT, then drain and clean up."""
    runner = _Runner(app, settings)

    async def run() -> None:
        await runner.setup()
        try:
            site = web.TCPSite(
                runner, settings.host, settings.port, reuse_port=settings.reuse_port or None
            )
            await site.start()
            ready()
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    asyncio.set_event_loop(loop)
    main = loop.create_task(run())
    try:
        loop.run_until_complete(main)
    except (web.GracefulExit, KeyboardInterrupt):
        pass
    finally:
        main.cancel()
        with contextlib.suppress(asyncio.CancelledError, web.GracefulExit):
            loop.run_until_complete(main)
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
