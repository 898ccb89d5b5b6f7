"""One way to show a table in the book: no index, numbers to sensible digits, costs in dollars
per 1,000 problems, a dash where nothing applies (the reason in a note), long text wrapped.

``show(df)`` returns a pandas ``Styler`` (rendered as HTML by Jupyter Book); the DataFrame itself
is left as it is, so a chapter computes on numbers and shows text."""
from __future__ import annotations

import html
import math
import re
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

DASH = "–"
#: Verdict labels (``verdicts.VERDICTS``) and their colours, for the tables and the forest plot.
VERDICT_COLOURS = {"reproduced": "#2e7d32", "real but small": "#9a6700", "not reproduced": "#c62828",
                   "undecided": "#616161"}


def number(x, digits: int = 3) -> str:
    """A number to ``digits`` significant digits (integers whole, with thousands separators);
    a dash for a missing value."""
    if _missing(x):
        return DASH
    if isinstance(x, (bool, np.bool_)):
        return "yes" if x else "no"
    if isinstance(x, (int, np.integer)):
        return f"{int(x):,}"
    if isinstance(x, (float, np.floating)):
        x = float(x)
        if math.isinf(x):
            return "∞" if x > 0 else "-∞"
        if x.is_integer() and abs(x) < 1e15:
            return f"{int(x):,}"
        if x == 0:
            return "0"
        if abs(x) < 1e-12:  # below any cost or score the book shows
            return "≈0"
        # plain decimals, never scientific notation: 1.206e-06 is 0.00000121
        return f"{x:,.{max(0, digits - 1 - int(math.floor(math.log10(abs(x)))))}f}"
    return str(x)


def _missing(x) -> bool:
    try:
        return x is None or bool(pd.isna(x))
    except (TypeError, ValueError):  # an array or another object: not a missing scalar
        return False


def dollars(x, per: int = 1000) -> str:
    """A cost per problem as dollars per ``per`` problems ("$0.48")."""
    if _missing(x) or not np.isfinite(float(x)):
        return DASH
    v = float(x) * per
    return f"${v:,.2f}" if abs(v) >= 0.01 else f"${v:.2g}"


def interval(estimate, low, high, digits: int = 3) -> str:
    """"0.112 [0.095, 0.128]", or a dash when the estimate is missing."""
    if _missing(estimate):
        return DASH
    return f"{number(estimate, digits)} [{number(low, digits)}, {number(high, digits)}]"


def verdict_label(v: str) -> str:
    """A verdict as a coloured label (HTML)."""
    colour = VERDICT_COLOURS.get(str(v), "#616161")
    return (f'<span style="background:{colour};color:white;border-radius:3px;padding:1px 6px;'
            f'white-space:nowrap">{html.escape(str(v))}</span>')


def show(df: pd.DataFrame, *, money: Sequence[str] = (), per: int = 1000, percent: Sequence[str] = (),
         digits: int = 3, wide: Sequence[str] = (), html_columns: Sequence[str] = (),
         rename: Mapping[str, str] | None = None, caption: str | None = None):
    """The table as a reader sees it: ``money`` columns ($ per problem) as $ per ``per`` problems,
    ``percent`` columns (shares) as percentages, other numbers to ``digits`` significant digits,
    missing values as a dash; ``wide`` text columns wrap in a wider cell; ``html_columns`` are
    shown as given (e.g. ``verdict_label``). The index is hidden."""
    # a meaningful index (named, or not 0..n-1) becomes columns; a plain row count is dropped
    plain = isinstance(df.index, pd.RangeIndex) and df.index.name is None
    out = df.reset_index(drop=plain).copy()
    out.columns = [" / ".join(map(str, c)) if isinstance(c, tuple) else str(c) for c in out.columns]
    fmt = {}
    for c in out.columns:
        if c in html_columns:
            continue
        if c in money:
            fmt[c] = lambda v, per=per: dollars(v, per)
        elif c in percent:
            fmt[c] = lambda v: DASH if _missing(v) else f"{100 * v:.1f}%"
        else:
            fmt[c] = lambda v, d=digits: number(v, d) if not isinstance(v, str) else (v or DASH)
    names = dict(rename or {})
    for c in money:
        names.setdefault(c, f"{c} ($ per {per:,} problems)" if "$" not in c else c)
    styler = out.style.format(fmt).hide(axis="index")
    styles = [{"selector": "td", "props": "vertical-align: top; padding: 2px 8px;"},
              {"selector": "th", "props": "text-align: left; padding: 2px 8px;"}]
    styles += [{"selector": f"td.col{list(out.columns).index(c)}", "props": "min-width: 18em; white-space: normal;"}
               for c in wide if c in out.columns]
    styler = styler.set_table_styles(styles)
    if names:
        styler = styler.relabel_index([names.get(c, c) for c in out.columns], axis="columns")
    if caption:
        styler = styler.set_caption(caption)
    return styler


_COST_NAME = re.compile(r"(^|[\s_(])cost($|[\s_)])", re.I)
_NOT_DOLLARS = re.compile(r"saved|share|ratio|relative|rel\.|%|\$|per 1,?000|tokens|seconds", re.I)


def cost_columns(df: pd.DataFrame) -> list[str]:
    """Columns that hold dollars per problem: named for a cost (not a share or saving of one),
    numeric, and every value under a cent (no per-problem price in the book comes near it)."""
    found = []
    for c in df.columns:
        name = " / ".join(map(str, c)) if isinstance(c, tuple) else str(c)
        if not _COST_NAME.search(name) or _NOT_DOLLARS.search(name):
            continue
        v = pd.to_numeric(df[c], errors="coerce") if df[c].dtype != bool else None
        if v is None or v.notna().sum() == 0 or v.notna().sum() < df[c].notna().sum():
            continue
        if float(v.abs().max()) < 0.01:
            found.append(name)
    return found


def format_dataframes() -> None:
    """Show every DataFrame a chapter displays through ``show`` (in a notebook; no-op elsewhere):
    one look for every table of the book, costs per problem as dollars per 1,000 problems."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    ip = get_ipython()
    if ip is not None:
        ip.display_formatter.formatters["text/html"].for_type(
            pd.DataFrame, lambda df: show(df, money=cost_columns(df)).to_html())
