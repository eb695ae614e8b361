"""Looser spellings of a model name, tried only when the exact name has no price.

Gateways and clients decorate model names: LiteLLM-style routing prefixes
(`openai/gpt-4o-mini`, `azure/gpt-4o`) and pinned snapshot dates
(`gpt-4o-mini-2024-07-18`). The price of the undecorated model is the right guess for
both, but only as a fallback: a dated snapshot the price library knows may cost
something different from the alias.
"""

from __future__ import annotations

import re

__all__ = ["fallback_names"]

# `-2024-07-18`, `-20240718` and `@20240718` (Vertex AI's spelling) at the end of a name.
_DATE_SUFFIX = re.compile(r"(?:[-@]\d{4}-\d{2}-\d{2}|[-@]\d{8})$")


def fallback_names(model: str) -> list[str]:
    """Names to try after `model` itself, most specific first, without duplicates."""
    without_prefix = model.rsplit("/", 1)[-1]
    candidates = [
        without_prefix,
        _DATE_SUFFIX.sub("", model),
        _DATE_SUFFIX.sub("", without_prefix),
    ]
    names: list[str] = []
    for name in candidates:
        if name and name != model and name not in names:
            names.append(name)
    return names
