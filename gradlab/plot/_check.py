"""Input checks shared by the plot functions: clear ValueErrors naming function and columns."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd


def require(
    df: Any,
    func: str,
    required: Sequence[str],
    optional: Sequence[str] = (),
    numeric: Sequence[str] = ("value",),
    table: str = "df",
) -> pd.DataFrame:
    """Check ``df`` is a non-empty DataFrame with ``required`` columns; return it unchanged.

    Raises ValueError naming ``func``, the missing column(s) and the required ones, or saying that
    the table is empty; TypeError when ``df`` is not a DataFrame.
    """
    need = ", ".join(required)
    extra = f" (optional: {', '.join(optional)})" if optional else ""
    if not isinstance(df, pd.DataFrame):
        raise TypeError(
            f"{func}: {table} must be a pandas DataFrame with columns {need}{extra}, "
            f"got {type(df).__name__}"
        )
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ValueError(
            f"{func}: {table} is missing column(s) {', '.join(map(repr, missing))}; "
            f"required columns: {need}{extra}; got: {', '.join(map(str, df.columns))}"
        )
    if len(df) == 0:
        raise ValueError(f"{func}: {table} is empty (0 rows); required columns: {need}{extra}")
    for c in numeric:
        if c in df.columns and not pd.api.types.is_numeric_dtype(df[c]):
            raise ValueError(f"{func}: column {c!r} of {table} must be numeric, got {df[c].dtype}")
    return df


def select(df: pd.DataFrame, func: str, table: str = "df", **filters: Any) -> pd.DataFrame:
    """Rows of ``df`` where each column equals its filter value (None = no filter).

    A filter on a column that does not exist, or one that leaves no rows, is a ValueError.
    """
    out = df
    for col, want in filters.items():
        if want is None:
            continue
        if col not in out.columns:
            raise ValueError(
                f"{func}: cannot select {col}={want!r}: {table} has no column {col!r}; "
                f"columns: {', '.join(map(str, df.columns))}"
            )
        keep = out[col] == want
        if not keep.any():
            have = ", ".join(map(repr, sorted(df[col].dropna().unique().tolist(), key=str)))
            raise ValueError(f"{func}: no rows with {col}={want!r} in {table}; available: {have}")
        out = out[keep]
    return out


def one_quantity(
    df: pd.DataFrame, func: str, quantity: str | None, table: str = "df"
) -> tuple[pd.DataFrame, str | None]:
    """Keep one value of the ``quantity`` column, if the table has one.

    ``quantity`` matches exactly, or else as a substring (``"spectral"`` finds
    ``"log10_jac_norm_spectral"``) when that is unambiguous. With ``quantity=None`` the table must
    hold a single quantity. Returns the rows and the quantity name kept (None without the column).
    """
    if "quantity" not in df.columns:
        return df, quantity
    names = sorted(df["quantity"].dropna().astype(str).unique().tolist())
    if quantity is None:
        if len(names) > 1:
            raise ValueError(
                f"{func}: {table} holds several quantities ({', '.join(names)}); "
                f"pass quantity= to pick one"
            )
        return df, names[0] if names else None
    if quantity in names:
        return df[df["quantity"] == quantity], quantity
    hits = [n for n in names if quantity in n]
    if len(hits) == 1:
        return df[df["quantity"] == hits[0]], hits[0]
    what = "matches several" if hits else "matches none"
    raise ValueError(
        f"{func}: quantity={quantity!r} {what} of the quantities in {table}: {', '.join(names)}"
    )


def unique_per(df: pd.DataFrame, func: str, keys: Sequence[str], table: str = "df") -> None:
    """ValueError when several rows share ``keys`` (i.e. the table mixes runs)."""
    dup = df.duplicated(list(keys), keep=False)
    if dup.any():
        others = [
            c for c in df.columns if c not in (*keys, "value") and df.loc[dup, c].nunique() > 1
        ]
        hint = f"columns that vary: {', '.join(others)}; " if others else ""
        raise ValueError(
            f"{func}: {table} has several rows per ({', '.join(keys)}), so it mixes runs; "
            f"{hint}select one run with keyword filters (e.g. cell='lstm', seed=0)"
        )
