"""The `--pricing FILE` format: per-model price overrides and the unknown-model policy.

YAML or JSON (JSON is valid YAML), all keys optional::

    provider: openai                # genai-prices provider tried first; null = guess per model
    models:                         # exact model names as clients send them
      my-llama: {inputPerMillion: 0.2, outputPerMillion: 0.4, contextWindow: 131072}
      gpt-4o-mini: {inputPerMillion: 0.15, outputPerMillion: 0.6, cachedInputPerMillion: 0.075}
    unknownModel: refuse            # default; or a price: {inputPerMillion: 1, outputPerMillion: 2}

Prices are USD per million tokens; `contextWindow` (optional, tokens of prompt and output)
bounds what a request to the model reserves, 128000 when neither it nor the library says.
Unknown keys are errors, so a typo cannot silently
leave a model unpriced. Without a file, only `genai-prices` prices models and unknown
models are refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.alias_generators import to_camel

from llmquota.pricing.model_price import ModelPrice, UnknownModelPolicy
from llmquota.pricing.table import PriceTable

__all__ = ["PricingFileError", "load_price_table"]

_Rate = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class PricingFileError(ValueError):
    """The pricing file is missing, not YAML, or breaks the schema; names file and field."""


class _FileModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, extra="forbid", frozen=True)


class _PriceEntry(_FileModel):
    input_per_million: _Rate
    output_per_million: _Rate
    cached_input_per_million: _Rate | None = None
    context_window: Annotated[int, Field(gt=0)] | None = None

    def to_model_price(self) -> ModelPrice:
        return ModelPrice(
            input_per_million=self.input_per_million,
            output_per_million=self.output_per_million,
            cached_input_per_million=self.cached_input_per_million,
            context_window=self.context_window,
        )


class _PricingFile(_FileModel):
    provider: str | None = "openai"
    models: dict[str, _PriceEntry] = Field(default_factory=dict)
    # None stands for "refuse"; mapped by the validator so errors name `unknownModel`
    # itself instead of pydantic's per-union-member locations.
    unknown_model: _PriceEntry | None = None

    @field_validator("unknown_model", mode="before")
    @classmethod
    def _refuse_is_no_default(cls, value: Any) -> Any:
        if value == "refuse":
            return None
        if value is None or isinstance(value, str):
            raise ValueError("must be `refuse` or a price like {inputPerMillion: 1, ...}")
        return value


def load_price_table(path: Path | None) -> PriceTable:
    """The price table configured by the file at `path`; library prices only when None.

    Raises `PricingFileError` with the file and the offending field in its message.
    """
    if path is None:
        return PriceTable({}, UnknownModelPolicy.refuse())
    pricing = _parse(path)
    overrides = {name: entry.to_model_price() for name, entry in pricing.models.items()}
    unknown_model = (
        UnknownModelPolicy.refuse()
        if pricing.unknown_model is None
        else UnknownModelPolicy.charge(pricing.unknown_model.to_model_price())
    )
    return PriceTable(overrides, unknown_model, provider_id=pricing.provider)


def _parse(path: Path) -> _PricingFile:
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise PricingFileError(f"pricing file {path}: cannot read: {error}") from error
    except yaml.YAMLError as error:
        raise PricingFileError(f"pricing file {path}: not valid YAML/JSON: {error}") from error
    try:
        return _PricingFile.model_validate({} if document is None else document)
    except ValidationError as error:
        raise PricingFileError(f"pricing file {path}: {_describe(error)}") from error


def _keys(model: type[_FileModel]) -> str:
    return ", ".join(field.alias or name for name, field in model.model_fields.items())


def _expected_keys(location: tuple[int | str, ...]) -> str:
    """The keys allowed where an unknown one was found (`models.x.typo`: a price's)."""
    return _keys(_PricingFile) if len(location) == 1 else _keys(_PriceEntry)


def _describe(error: ValidationError) -> str:
    """Every problem on one line, each led by its dotted field path
    (`models.x.inputPerMillion`); an unknown key says which keys are expected there."""
    problems = []
    for detail in error.errors():
        field = ".".join(str(part) for part in detail["loc"]) or "(top level)"
        message = detail["msg"].removeprefix("Value error, ")
        if detail["type"] == "extra_forbidden":
            message = f"unknown key; expected one of {_expected_keys(detail['loc'])}"
        problems.append(f"{field}: {message}")
    return "; ".join(problems)
