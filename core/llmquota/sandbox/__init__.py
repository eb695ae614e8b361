"""llmquota with nothing real behind it: the one-command demo and the fake upstream.

Edges, not shared core: the demo (`llmquota demo`) and the fake OpenAI-compatible
upstream (`llmquota fake-upstream`, used by the demo, the tests and the benchmarks) are
run as their own processes; no other part of llmquota imports them (import-linter holds
that).
"""
