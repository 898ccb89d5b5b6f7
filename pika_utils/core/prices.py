"""The one price table: dollars per million tokens for each model, input and output.

Defaults are modelled on public serverless per-token prices, which scale with model size; they
are stated in the book and can be overridden per run (a profile's ``prices`` parameter). The
numbers matter only relative to each other: routing compares models by cost ratios.
"""
from __future__ import annotations

from typing import Mapping

import pandas as pd

#: Size tiers (upper bound in billions of parameters) -> (input, output) $ per 1M tokens. From
#: 4B up, public serverless list prices by size; below that, where no provider lists a price,
#: each tier halves the one above, so that the workshop's two small models differ in price.
SIZE_TIERS: tuple[tuple[float, float, float], ...] = (
    (0.2, 0.02, 0.04),
    (0.6, 0.04, 0.08),
    (1.0, 0.06, 0.12),
    (4.0, 0.10, 0.20),
    (8.0, 0.20, 0.40),
    (21.0, 0.30, 0.60),
    (80.0, 0.90, 1.20),
)

#: Parameter counts (billions) of the models the profiles use; prices follow from the tiers.
MODEL_SIZES_B: dict[str, float] = {
    "tiny-random-llama": 0.0001,
    "smollm2-135m": 0.135,
    "qwen2.5-coder-0.5b": 0.49,
    "qwen2.5-coder-1.5b": 1.54,
    "qwen2.5-math-1.5b": 1.5,
    "qwen2.5-math-7b": 7.6,
    "r1-distill-qwen-7b": 7.6,
    "gpt-oss-20b": 21.0,
}


def price_for_size(params_b: float) -> tuple[float, float]:
    """(input, output) $ per 1M tokens for a model of ``params_b`` billion parameters."""
    for upper, p_in, p_out in SIZE_TIERS:
        if params_b <= upper:
            return p_in, p_out
    raise ValueError(f"no price tier for a model of {params_b}B parameters; pass prices explicitly")


def default_prices() -> dict[str, dict[str, float]]:
    """The default table: every known model priced by its size tier."""
    out = {}
    for name, size in MODEL_SIZES_B.items():
        p_in, p_out = price_for_size(size)
        out[name] = {"input_per_m": p_in, "output_per_m": p_out}
    return out


def price_table(overrides: Mapping[str, Mapping[str, float]] | None = None) -> pd.DataFrame:
    """Defaults merged with per-run ``overrides`` ({model: {input_per_m, output_per_m}})."""
    table = default_prices()
    for model, p in (overrides or {}).items():
        missing = {"input_per_m", "output_per_m"} - set(p)
        if missing:
            raise ValueError(f"price override for {model!r} lacks {sorted(missing)}")
        table[model] = {"input_per_m": float(p["input_per_m"]), "output_per_m": float(p["output_per_m"])}
    df = pd.DataFrame.from_dict(table, orient="index").rename_axis("model").reset_index()
    return df


def get_price(model: str, overrides: Mapping[str, Mapping[str, float]] | None = None) -> tuple[float, float]:
    """(input, output) $ per 1M tokens for ``model``, with a clear error if it has no price."""
    table = price_table(overrides).set_index("model")
    if model not in table.index:
        raise KeyError(
            f"no price for model {model!r}. Add it to the run's `prices` parameter, e.g. "
            f"prices: {{{model}: {{input_per_m: 0.1, output_per_m: 0.2}}}}; known: {sorted(table.index)}"
        )
    row = table.loc[model]
    return float(row["input_per_m"]), float(row["output_per_m"])


def token_cost(model: str, input_tokens, output_tokens, overrides=None):
    """Dollar cost of ``input_tokens`` prompt tokens and ``output_tokens`` generated tokens."""
    p_in, p_out = get_price(model, overrides)
    return (input_tokens * p_in + output_tokens * p_out) / 1e6
