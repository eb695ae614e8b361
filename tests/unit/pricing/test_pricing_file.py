"""The `--pricing FILE` format: YAML or JSON, errors that name the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmquota.pricing import ModelPrice, PricingFileError, UnknownModelError, load_price_table


def write(tmp_path: Path, text: str, name: str = "pricing.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_no_file_means_library_prices_and_refusal() -> None:
    table = load_price_table(None)
    assert table.price_of("gpt-4o-mini").input_per_million == 0.15
    with pytest.raises(UnknownModelError):
        table.price_of("my-llama")


def test_yaml_overrides_and_default_price(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
models:
  my-llama: {inputPerMillion: 0.2, outputPerMillion: 0.4, cachedInputPerMillion: 0.1}
unknownModel: {inputPerMillion: 1, outputPerMillion: 2}
""",
    )
    table = load_price_table(path)
    assert table.price_of("my-llama") == ModelPrice(0.2, 0.4, 0.1)
    assert table.price_of("whatever") == ModelPrice(1, 2)
    assert table.provider_id == "openai"


def test_json_works_too(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '{"provider": null, "models": {"m": {"inputPerMillion": 1, "outputPerMillion": 1}},'
        ' "unknownModel": "refuse"}',
        "pricing.json",
    )
    table = load_price_table(path)
    assert table.provider_id is None
    assert table.price_of("m") == ModelPrice(1, 1)
    with pytest.raises(UnknownModelError):
        table.price_of("other")


def test_empty_file_is_all_defaults(tmp_path: Path) -> None:
    table = load_price_table(write(tmp_path, ""))
    assert table.unknown_model.refuses


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("models: {m: {inputPerMillion: -1, outputPerMillion: 1}}", "models.m.inputPerMillion"),
        ("models: {m: {inputPerMillion: 1}}", "models.m.outputPerMillion"),
        ("models: {m: {inputPerMillion: 1, outputPerMillion: 1, typo: 3}}", "models.m.typo"),
        ("unknownModel: free", "unknownModel"),
        ("unknownModel: {inputPerMillion: 1}", "unknownModel.outputPerMillion"),
        ("modles: {}", "modles"),
        ("- a list", "(top level)"),
    ],
)
def test_bad_file_names_the_field(tmp_path: Path, text: str, field: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(PricingFileError, match="pricing file") as raised:
        load_price_table(path)
    assert f"{field}:" in str(raised.value)


def test_unreadable_and_unparsable_files(tmp_path: Path) -> None:
    with pytest.raises(PricingFileError, match="cannot read"):
        load_price_table(tmp_path / "missing.yaml")
    with pytest.raises(PricingFileError, match="not valid YAML"):
        load_price_table(write(tmp_path, "models: {a: [}"))
