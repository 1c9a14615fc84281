"""The tables of an unfinished grid: every long CSV ends with one row per missing cell (size,
strategy, seed and ``missing``: why, eval/analysis/grid_check.py), so that the CSV says which
cells it lacks; the readers of the tables (the figures, the README's results) skip those rows
with ``read_table``. A finished grid's CSVs have no such rows and no ``missing`` column."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from pandas.api.types import is_bool_dtype, is_integer_dtype

MISSING_COLUMN = "missing"


def with_missing_rows(frame: pd.DataFrame, missing: dict[tuple[str, str, int], str]) -> pd.DataFrame:
    """``frame`` followed by a row per missing cell; its whole-number and true/false columns stay
    so (empty in the missing rows)."""
    if not missing:
        return frame
    kept = frame.astype({c: "Int64" if is_integer_dtype(frame[c]) else "boolean" for c in frame.columns
                         if (is_integer_dtype(frame[c]) or is_bool_dtype(frame[c]))
                         and c not in ("size", "strategy", "seed")})
    rows = pd.DataFrame([{"size": size, "strategy": strategy, "seed": seed, MISSING_COLUMN: why}
                         for (size, strategy, seed), why in missing.items()])
    return pd.concat([kept, rows], ignore_index=True) if len(kept) else rows.reindex(
        columns=list(dict.fromkeys([*frame.columns, *rows.columns])))


def read_table(path: str | Path) -> tuple[pd.DataFrame, dict[str, str]]:
    """A long CSV without its missing-cell rows, its columns typed as if they had never been there,
    and {"size/strategy/seedN": why} of the missing cells."""
    frame = pd.read_csv(path)
    if MISSING_COLUMN not in frame.columns:
        return frame, {}
    marked = frame[MISSING_COLUMN].notna().to_numpy()
    missing = {f"{size}/{strategy}/seed{int(seed)}": why for size, strategy, seed, why in
               frame.loc[marked, ["size", "strategy", "seed", MISSING_COLUMN]].itertuples(index=False)}
    # The rows come last (``with_missing_rows``): read again up to them, so that the columns are
    # typed as the finished rows alone type them (whole numbers stay whole).
    first = int(np.flatnonzero(marked)[0])
    if marked[first:].all():
        kept = pd.read_csv(path, nrows=first)
    else:
        kept = frame[~marked].reset_index(drop=True)
    return kept.drop(columns=MISSING_COLUMN), missing
