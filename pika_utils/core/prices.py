"""The one price table: dollars per million tokens for each model, input and output.

Defaults are modelled on public serverless per-token prices, which scale with model size; they
are stated in the book and can be overridden per run (a profile's ``prices`` parameter). The
numbers matter only relative to each other: routing compares models by cost ratios.
"""
from __future__ import annotations

import math
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


PRICE_KEYS = ("input_per_m", "output_per_m")


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def price_for_size(params_b: float, *, where: str = "size_b") -> tuple[float, float]:
    """(input, output) $ per 1M tokens for a model of ``params_b`` billion parameters; a size that
    is not a positive number, or above the largest tier, is refused naming ``where``."""
    if not _is_number(params_b) or params_b <= 0:
        raise ValueError(f"{where}={params_b!r}: must be a number of billions of parameters > 0")
    for upper, p_in, p_out in SIZE_TIERS:
        if params_b <= upper:
            return p_in, p_out
    raise ValueError(f"{where}={params_b!r}: no price tier for a model of {params_b}B parameters (the tiers end at "
                     f"{SIZE_TIERS[-1][0]}B); give its price instead")


def check_price(price, where: str) -> dict[str, float]:
    """A price as given by a user, ``{input_per_m: $, output_per_m: $}`` per million tokens, both
    numbers >= 0 (text such as "0.1", a boolean or a missing key is refused, naming ``where``)."""
    if not isinstance(price, Mapping):
        raise ValueError(f"{where} ({price!r}): must be {{input_per_m: $, output_per_m: $}} per million tokens")
    missing = [k for k in PRICE_KEYS if k not in price]
    unknown = sorted(set(map(str, price)) - set(PRICE_KEYS))
    bad = {k: price[k] for k in PRICE_KEYS if k in price and not (_is_number(price[k]) and price[k] >= 0)}
    if missing or unknown or bad:
        why = "; ".join([f"lacks {missing}"] * bool(missing) + [f"unknown key(s) {unknown}"] * bool(unknown)
                        + [f"{k}={v!r} is not a number >= 0" for k, v in bad.items()])
        raise ValueError(f"{where} ({dict(price)!r}): {why}; give {{input_per_m: $, output_per_m: $}} per million "
                         "tokens, both numbers >= 0")
    return {k: float(price[k]) for k in PRICE_KEYS}


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
        table[model] = check_price(p, f"prices[{model!r}]")
    df = pd.DataFrame.from_dict(table, orient="index").rename_axis("model").reset_index()
    return df


def get_price(model: str, overrides: Mapping[str, Mapping[str, float]] | None = None) -> tuple[float, float]:
    """(input, output) $ per 1M tokens for ``model``, with a clear error if it has no price."""
    table = price_table(overrides).set_index("model")
    if model not in table.index:
        raise KeyError(
            f"no price for model {model!r}. Add it to the run's `prices` parameter, e.g. "
            f"prices: {{{model}: {{input_per_m: 0.1, output_per_m: 0.2}}}} ($ per million tokens; with "
            f"`pika rollouts`: --price INPUT_PER_M OUTPUT_PER_M or --size-b BILLIONS); known: {sorted(table.index)}"
        )
    row = table.loc[model]
    return float(row["input_per_m"]), float(row["output_per_m"])


def token_cost(model: str, input_tokens, output_tokens, overrides=None):
    """Dollar cost of ``input_tokens`` prompt tokens and ``output_tokens`` generated tokens."""
    p_in, p_out = get_price(model, overrides)
    return (input_tokens * p_in + output_tokens * p_out) / 1e6
