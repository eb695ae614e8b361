"""The sidecar: an aiohttp reverse proxy that enforces budgets and rate limits.

`create_app(settings)` builds the application; `llmquota sidecar` (`command`) serves it.
"""

from llmquota.sidecar.app import create_app
from llmquota.sidecar.settings import SidecarSettings

__all__ = ["SidecarSettings", "create_app"]
