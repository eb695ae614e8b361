"""The llmquota operator: kopf handlers that turn Teams, ApiKeys, Budgets and RateLimits
into resolved policies in Redis, keep statuses in step with the counters there, and
inject the sidecar into annotated Pods.

Layout follows Gafaelfawr: `command` (CLI) builds an `OperatorConfig`, `handlers`
registers thin kopf handlers that validate, delegate to `service` and patch status;
the decisions (`conditions`, `status_view`, `dependents`, `injection`, `keys`) are pure
functions tested on their own.
"""
