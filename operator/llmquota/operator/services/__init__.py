"""The operator's work, without kopf: the thin handlers and the background loops call in.

Each service reads through the process context (`OperatorState`: the Redis store, the
Kubernetes storage, kopf's indexes), asks a pure rule (`llmquota.operator.rules`) and
writes the result; every status goes out through one `StatusWriter`. The factory
(`llmquota.operator.factory`) builds them at startup.
"""
