"""The llmquota operator: kopf handlers that turn Teams, ApiKeys, Budgets and RateLimits
into resolved policies in Redis, keep statuses in step with the counters there, and
inject the sidecar into annotated Pods.

Layout follows Gafaelfawr (import-linter holds the layers): `command` (CLI) builds an
`OperatorConfig`; `handlers` registers thin kopf handlers that validate, delegate to a
service and let it write the status; `lifecycle` runs kopf and, at startup, has the
`factory` build the services (`services/`, no kopf) over one process context (`state`)
and one Kubernetes storage module (`storage/kubernetes`). The decisions are pure
functions in `rules/`, tested on their own.
"""
