"""The application's state, one `web.AppKey` per thing a handler needs.

Opened and closed by `app`'s cleanup contexts; read by the request phases and `probes`.
"""

from __future__ import annotations

import aiohttp
from aiohttp import web

from llmquota.pricing import PriceTable
from llmquota.sidecar.budget_gauges import BudgetGauges
from llmquota.sidecar.credentials import UpstreamCredential
from llmquota.sidecar.leases import InFlight
from llmquota.sidecar.metrics import SidecarMetrics
from llmquota.sidecar.policies import PolicyCache
from llmquota.sidecar.settings import SidecarSettings
from llmquota.sidecar.standalone import StandaloneStatus
from llmquota.sidecar.workload_identity import WorkloadPolicies
from llmquota.store import QuotaStore

__all__ = [
    "BUDGET_GAUGES",
    "CREDENTIAL",
    "IN_FLIGHT",
    "METRICS",
    "POLICIES",
    "PRICES",
    "SETTINGS",
    "STANDALONE",
    "STORE",
    "UPSTREAM",
    "WORKLOADS",
]

SETTINGS = web.AppKey("settings", SidecarSettings)
METRICS = web.AppKey("metrics", SidecarMetrics)
PRICES = web.AppKey("prices", PriceTable)
CREDENTIAL = web.AppKey("credential", UpstreamCredential)
STORE = web.AppKey("store", QuotaStore)
UPSTREAM = web.AppKey("upstream", aiohttp.ClientSession)
POLICIES = web.AppKey("policies", PolicyCache)
WORKLOADS = web.AppKey("workloads", WorkloadPolicies)
IN_FLIGHT = web.AppKey("in_flight", InFlight)
BUDGET_GAUGES = web.AppKey("budget_gauges", BudgetGauges)
# Standalone mode's readiness: manifests loaded without problems, store not wiped (always
# ready otherwise).
STANDALONE = web.AppKey("standalone", StandaloneStatus)
