"""Token counts that never fall short: the model's own BPE where it is known, a bound else.

A reservation is only a bound on a request's cost if its prompt is never under-counted;
the old rule of thumb (4 characters a token) counts a Chinese prompt at a third of its
real tokens. OpenAI's encodings (`o200k_base`, `cl100k_base`) ship inside the
`bpe-openai` wheel, so the exact count needs no download. Every byte-level BPE token is
at least one UTF-8 byte, so for a model whose encoding is unknown (or past the CPU
budget below) the byte count is a bound the real count never exceeds.

Cost, measured on this machine (`o200k_base`, one core): 0.02-0.03 ms for a 1.5 KB chat
prompt, 2.2 ms for 100 KB, against about 0.7 ms of sidecar CPU per request in all. So a
request's texts are tokenized up to `TOKENIZED_CHARS_PER_REQUEST` characters, and the rest
is bounded by its bytes: a huge prompt is over-reserved (at input prices), never under.

Only the package's Rust extension is loaded, not its tiktoken-style Python wrapper: the
wrapper decodes every bundled vocabulary into Python dicts when imported (0.7 s, 60 MB)
and copies one again per encoding (70 MB more), where the extension holds `o200k_base`
in 65 MB and loads it in 55 ms, on the first request for an OpenAI model.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
from functools import cache, lru_cache
from pathlib import Path
from types import ModuleType
from typing import Protocol

from llmquota.pricing.model_names import fallback_names

__all__ = [
    "TOKENIZED_CHARS_PER_REQUEST",
    "TextMeter",
    "encoding_for_model",
    "exact_counter",
    "output_token_counter",
    "utf8_bytes",
]

TOKENIZED_CHARS_PER_REQUEST = 16_384
"""Characters of one request tokenized exactly (about 0.35 ms); bytes bound the rest."""

# OpenAI's model families by name prefix, newest encoding first; as tiktoken maps them.
_ENCODING_PREFIXES: tuple[tuple[str, str], ...] = (
    ("gpt-4o", "o200k_base"),
    ("chatgpt-4o", "o200k_base"),
    ("gpt-4.1", "o200k_base"),
    ("gpt-4.5", "o200k_base"),
    ("gpt-5", "o200k_base"),
    ("gpt-oss", "o200k_base"),
    ("o1", "o200k_base"),
    ("o3", "o200k_base"),
    ("o4", "o200k_base"),
    ("gpt-4", "cl100k_base"),
    ("gpt-3.5", "cl100k_base"),
    ("gpt-35", "cl100k_base"),
    ("text-embedding-3", "cl100k_base"),
    ("text-embedding-ada-002", "cl100k_base"),
)
_CACHED_MODELS = 4096


def utf8_bytes(text: str) -> int:
    """UTF-8 length of `text`; a lone surrogate (valid in JSON) counts its 3 bytes."""
    return len(text.encode("utf-8", "surrogatepass"))


class Encoding(Protocol):
    """The extension's tokenizer: what this module uses of it."""

    def count(self, text: str) -> int:
        """Tokens of `text`, special-token names counted as ordinary text."""


@lru_cache(maxsize=_CACHED_MODELS)
def encoding_for_model(model: str) -> Encoding | None:
    """The BPE encoding of an OpenAI model (also behind `openai/` or a date), else None."""
    for name in [model, *fallback_names(model)]:
        for prefix, encoding in _ENCODING_PREFIXES:
            if name.startswith(prefix):
                return _encoding(encoding)
    return None


@cache
def _encoding(name: str) -> Encoding:
    tokenizer: Encoding = _bindings().tokenizer_for_encoding(name)
    return tokenizer


@cache
def _bindings() -> ModuleType:
    """`bpe_openai._bindings`, loaded from the installed package without running its
    `__init__` (see the module docstring)."""
    package = importlib.util.find_spec("bpe_openai")
    if package is None or package.origin is None:
        raise ModuleNotFoundError("bpe-openai is not installed", name="bpe_openai")
    [path] = Path(package.origin).parent.glob("_bindings*.so")
    loader = importlib.machinery.ExtensionFileLoader("bpe_openai._bindings", str(path))
    spec = importlib.util.spec_from_file_location(loader.name, path, loader=loader)
    if spec is None:
        raise ModuleNotFoundError(f"cannot load {path}", name=loader.name)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


class TextMeter:
    """Counts the tokens of texts: exactly within a CPU budget, bounded by bytes past it.

    `exact` is what the tokenizer counted: the real prompt holds at least that many
    tokens, which is what bounds the output room left in the context window.
    `char_budget` None tokenizes everything (generated text, a few tokens a delta).
    """

    def __init__(
        self, encoding: Encoding | None, char_budget: int | None = TOKENIZED_CHARS_PER_REQUEST
    ) -> None:
        self.encoding = encoding
        self.exact = 0
        self._chars_left = char_budget

    def count(self, text: str) -> int:
        """Tokens of `text`, never fewer than the model's tokenizer would count."""
        if self.encoding is None or not text:
            return utf8_bytes(text)
        if self._chars_left is not None:
            if len(text) > self._chars_left:
                return utf8_bytes(text)
            self._chars_left -= len(text)
        try:
            tokens = self.encoding.count(text)
        except UnicodeEncodeError:  # a lone surrogate, which JSON allows and BPE cannot take
            return utf8_bytes(text)
        self.exact += tokens
        return tokens


def exact_counter(encoding: str) -> TextMeter:
    """A meter for the named encoding (`o200k_base`, `cl100k_base`), without a budget."""
    return TextMeter(_encoding(encoding), char_budget=None)


def output_token_counter(model: str) -> TextMeter:
    """A meter for the text a model generates: its tokenizer without a budget, or bytes."""
    return TextMeter(encoding_for_model(model), char_budget=None)
