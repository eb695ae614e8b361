"""Policy: pure decisions over plain data.

Specs are resolved into one `ResolvedPolicy` per key (everything that applies to it);
a request plus its policy become Lua script arguments; a script's answer becomes a
`Decision` (status, OpenAI-style error, headers). No I/O happens here.
"""
