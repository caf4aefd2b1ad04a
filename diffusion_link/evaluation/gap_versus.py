"""Paired differences of a gap table's rows from a named row: raw audio (``_diff``), and any row named in
``compare_to`` (e.g. the regressor; ``_vs_<slug>``), each on the same clips, in the same order, with the
same resamples: the difference of two rows' replicates is the replicate of their difference, and its basic
interval is the paired interval (:mod:`diffusion_link.evaluation.gap_intervals`).
"""

from __future__ import annotations

import re

import numpy as np

from diffusion_link.evaluation.gap_intervals import basic_interval, bias_corrected


def versus_suffix(name: str) -> str:
    """The column suffix of the paired difference from row ``name``: ``_vs_<name as lower-case words joined by _>``."""
    slug = re.sub(r"[^0-9a-zA-Z]+", "_", name).strip("_").lower()
    if not slug:
        raise ValueError(f"row name {name!r} has no letters or digits to name its comparison columns by")
    return f"_vs_{slug}"


def check_compare_to(compare_to, rows, what: str = "the gap table") -> tuple[str, ...]:
    """``compare_to`` as a tuple of row names, each a row of ``rows``; an unknown name is refused with the known rows."""
    names = (compare_to,) if isinstance(compare_to, str) else tuple(compare_to or ())
    known = list(rows)
    for name in names:
        if name not in known:
            raise ValueError(f"compare_to {name!r} is not a row of {what}; its rows: {known}")
    return names


def paired_columns(suffix: str, value: float, reps, base_value: float, base_reps, bootstrap: int, confidence: float, biased: bool = False) -> dict[str, float]:
    """``{suffix: value − base_value}`` and, with ``bootstrap``, ``{suffix}_lo`` / ``_hi``: the basic interval of
    the difference of the two rows' replicates (the same resamples of the same clips). For a ``biased`` metric
    (Fréchet), whose rows the table shows by their bias-corrected values, the difference is bias-corrected too,
    2d − mean(d*): the difference of the two rows' shown values (exactly, when every replicate is finite),
    inside the same basic interval."""
    d = value - base_value
    out = {suffix: d}
    if bootstrap:
        with np.errstate(invalid="ignore"):  # a tiny set's resample can leave a metric undefined (NaN)
            diff_reps = np.asarray(reps) - np.asarray(base_reps)
        out[f"{suffix}_lo"], out[f"{suffix}_hi"] = basic_interval(d, diff_reps, confidence)
        if biased:
            out[suffix] = bias_corrected(d, diff_reps)
    return out


__all__ = ["check_compare_to", "paired_columns", "versus_suffix"]
