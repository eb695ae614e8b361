"""The operator's decisions, as pure functions over plain data.

Everything the operator decides (which conditions an object shows and when they flip,
what a status says given the counters, the forecast, which keys a change affects, what
a Secret or a mirrored copy looks like, which policies are orphaned, whether an override
applies) is decided here and unit-tested on its own. No module here imports kopf,
kubernetes_asyncio, redis or aiohttp, nor the operator's services or storage: the
import-linter contract "The operator's rules are pure" holds it. The services around
them read, call a rule, and write.
"""
