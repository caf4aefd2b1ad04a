"""The gap table across seeds (``diffusion-link seeds``): each method's metrics as mean ± standard deviation
over seeds, and each paired comparison the seeds' reports hold (from raw audio, ``_diff``; from a
``compare_to`` row, ``_vs_<slug>``) as the mean ± std of the per-seed difference beside how many seeds'
95 % paired interval excludes 0 on the better / the worse side, as the captioning table across seeds does
(:mod:`diffusion_link.report.seeds`). A difference that is better in every seed is what holds across seeds."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from diffusion_link.evaluation.gap_versus import versus_suffix
from diffusion_link.evaluation.report import BETTER, COLUMNS, across_seeds, defined_mean_std, read_gap_report


def comparisons(table: dict[str, dict[str, float]]) -> list[tuple[str, str]]:
    """``(suffix, the row compared with)`` of every paired comparison in one gap report: ``_diff`` (the
    baseline: the row whose differences from itself are all 0) and each ``_vs_<slug>`` (the row whose
    own ``_vs_<slug>`` values are 0)."""
    columns = next(iter(table.values()), {})
    suffixes = []
    for column in columns:
        for key, _ in COLUMNS:
            suffix = column[len(key) :]
            if column.startswith(key) and f"{column}_lo" in columns and (suffix == "_diff" or suffix.startswith("_vs_")) and suffix not in suffixes:
                suffixes.append(suffix)
    out = []
    for suffix in sorted(suffixes, key=lambda s: (s != "_diff", s)):
        if suffix.startswith("_vs_"):  # the compare_to row is the one whose name gives the suffix
            own = [name for name in table if versus_suffix(name) == suffix]
        else:  # the baseline: its difference from itself is 0 (NaN where a metric is undefined on it)
            own = [n for n, row in table.items() if all(np.isnan(v) or v == 0 for k, v in row.items() if k.endswith(("_diff", "_diff_lo", "_diff_hi")))]
        out.append((suffix, own[0] if len(own) == 1 else "raw audio" if suffix == "_diff" else suffix.removeprefix("_vs_")))
    return out


def _sides(key: str, lo: np.ndarray, hi: np.ndarray) -> tuple[int, int]:
    """Seeds whose interval excludes 0 on the better side, and on the worse side (``BETTER``; the probe's
    accuracy: lower counts as better, as in the single-seed table, which holds while both rows are above 0.5)."""
    above, below = int(np.sum(lo > 0)), int(np.sum(hi < 0))
    return (above, below) if BETTER.get(key) == "max" else (below, above)


def summarise_seeds(report_dirs: list[str | Path], out_dir: str | Path) -> tuple[Path, Path]:
    """From the ``gap_report.csv`` of one gap analysis per seed (bridges trained with that seed), write
    ``gap_report_seeds.csv`` (``<metric>_mean``, ``_std``; per comparison ``<metric><suffix>_mean``, ``_std``,
    ``_better``, ``_worse``; ``seeds``) and ``gap_report_seeds.md``."""
    tables = [(Path(folder), read_gap_report(folder)) for folder in report_dirs]
    for _, table in tables:  # a biased metric (Fréchet): its bias-corrected value, as each seed's table shows it
        for row in table.values():
            row.update({k: row[f"{k}_bc"] for k, _ in COLUMNS if f"{k}_bc" in row})
    keys = [key for key, _ in COLUMNS]
    paired = comparisons(tables[0][1])
    pairs = [(k, s) for s, _ in paired for k in keys if BETTER.get(k) and all(f"{k}{s}_lo" in row for _, t in tables for row in t.values())]
    stats = across_seeds(tables, keys + [f"{k}{s}{e}" for k, s in pairs for e in ("", "_lo", "_hi")], "gap reports")
    n = len(tables)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "gap_report_seeds.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            ["method"]
            + [f"{k}_{s}" for k in keys for s in ("mean", "std")]
            + [f"{k}{s}_{e}" for k, s in pairs for e in ("mean", "std", "better", "worse")]
            + ["seeds"]
        )
        for method, v in stats.items():
            cells = [f"{x:.6g}" for k in keys for x in (v[k].mean(), v[k].std(ddof=1))]
            for k, s in pairs:
                better, worse = _sides(k, v[f"{k}{s}_lo"], v[f"{k}{s}_hi"])
                cells += [*(f"{x:.6g}" for x in defined_mean_std(v[f"{k}{s}"])), str(better), str(worse)]
            writer.writerow([method, *cells, n])
    titles = dict(COLUMNS)
    parts = ["| method | " + " | ".join(titles[k] for k in keys) + " |\n|---|" + "---:|" * len(keys)]
    parts[0] += "".join(f"\n| {m} | " + " | ".join(f"{v[k].mean():.4f} ± {v[k].std(ddof=1):.4f}" for k in keys) + " |" for m, v in stats.items())
    for suffix, name in paired:
        shown = [k for k, s in pairs if s == suffix]
        rows = []
        for method, v in stats.items():
            if method == name or not shown:
                continue
            cells = []
            for k in shown:
                mean, std = defined_mean_std(v[f"{k}{suffix}"])
                better, worse = _sides(k, v[f"{k}{suffix}_lo"], v[f"{k}{suffix}_hi"])
                cells.append(f"{mean:+.4f} ± {std:.4f} ({better} / {worse})")
            rows.append(f"| {method} | " + " | ".join(cells) + " |")
        if rows:
            parts.append(
                f"Paired difference from {name} (row − {name}), across seeds: mean ± std of the per-seed difference, and "
                f"(better / worse) how many of the {n} seeds' 95 % paired intervals exclude 0 on the better / the worse side:\n\n"
                + "| method | "
                + " | ".join(titles[k] for k in shown)
                + " |\n|---|"
                + "---:|" * len(shown)
                + "\n"
                + "\n".join(rows)
            )
    note = f"Mean ± standard deviation over {n} seeds (each: bridges trained and the gap analysis run with that seed; Fréchet "
    note += "bias-corrected, as in each seed's table; a paired "
    note += "difference over the seeds where it is defined; probe accuracy: lower counted as better, as in each seed's table):\n"
    note += "".join(f"\n- {p}" for p, _ in tables)
    (out / "gap_report_seeds.md").write_text("\n\n".join(parts) + "\n\n" + note + "\n")
    return out / "gap_report_seeds.csv", out / "gap_report_seeds.md"


__all__ = ["comparisons", "summarise_seeds"]
