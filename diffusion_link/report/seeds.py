"""The captioning table across seeds (``diffusion-link caption-seeds``; ``make demo-caption-seeds``): every
row's metrics as mean ± standard deviation over seeds (bridges and captioners retrained per seed), beside
each seed's paired comparison with its setting's raw-audio row: the mean ± std of the paired difference,
and in how many seeds its 95 % paired interval excludes 0 above / below. The same aggregation as the gap
table's seeds (:func:`diffusion_link.evaluation.report.across_seeds`).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from diffusion_link.evaluation.report import across_seeds, defined_mean_std
from diffusion_link.files import write_atomic
from diffusion_link.report.page import read_system
from diffusion_link.report.versus import named_row
from diffusion_link.report.tables import CAPTION_METRICS, RIGHT_ANIMALS, ClipsDiffer, is_ceiling, is_raw, paired_difference, per_clip

#: the paired differences the Markdown table shows (the CSV has every per-clip metric's)
SHOWN_PAIRED = ("cider_d", RIGHT_ANIMALS)


def _systems(folder: Path) -> list:
    systems = [s for s in (read_system(p.parent) for p in sorted(Path(folder).rglob("scores.json"))) if s is not None]
    if not systems:
        raise FileNotFoundError(f"no captioning results (scores.json + predictions.csv) under {folder}: run that seed's caption tests first")
    return sorted(systems, key=lambda s: s.sort_key())


def _add_paired(row: dict, suffix: str, base, system, keys: list[str], clip_info: dict | None) -> None:
    """``row[<key><suffix>]``, ``_lo``, ``_hi``: ``system`` minus ``base`` per clip, with its paired interval,
    for every key both rows score on the same clips."""
    for key in keys:
        try:
            p = paired_difference(per_clip(base, key, clip_info), per_clip(system, key, clip_info))
        except ClipsDiffer:
            continue
        row[f"{key}{suffix}"], row[f"{key}{suffix}_lo"], row[f"{key}{suffix}_hi"] = p.diff, p.lo, p.hi


def seed_values(systems: list, clip_info: dict | None = None) -> dict[str, dict[str, float]]:
    """One seed's ``{"setting / system": {metric: value, <metric>_diff, _diff_lo, _diff_hi (the paired
    difference from the setting's raw-audio row, with its interval), ...}}``; ``right_animals`` (the demo:
    the share of captions naming exactly the clip's animals) where ``clip_info`` is given."""
    raw = {}
    for s in systems:
        if is_raw(s):
            raw.setdefault(s.setting, s)
    out = {}
    for s in systems:
        row = {k: float(v) for k, v in s.report.get("scores", {}).items() if isinstance(v, (int, float))}
        paired = [k for k, _ in CAPTION_METRICS if s.rows and k in next(iter(s.rows.values()))]
        if clip_info:
            right = per_clip(s, RIGHT_ANIMALS, clip_info)
            row[RIGHT_ANIMALS] = float(np.mean(list(right.values())))
            paired.append(RIGHT_ANIMALS)
        base = raw.get(s.setting)
        if base is not None and base is not s and not is_ceiling(s):
            _add_paired(row, "_diff", base, s, paired, clip_info)
        try:  # compare_to (report/versus.py): the same paired difference from the setting's row through that bridge
            named = named_row(systems, s)
        except LookupError:
            named = None
        if named is not None and named is not s and not is_ceiling(s):
            _add_paired(row, "_vs", named, s, paired, clip_info)
        out[f"{s.setting} / {s.name}"] = row
    return out


def summarise_caption_seeds(seed_dirs: list[str | Path], out_dir: str | Path, manifest: str | Path | None = None) -> tuple[Path, Path]:
    """From one folder of caption tests per seed (e.g. ``artifacts/seed-<s>/caption``), write
    ``caption_seeds.csv`` (per row: ``<metric>_mean``/``_std``; ``<metric>_diff_mean``/``_diff_std`` and
    ``<metric>_above``/``_below``, the seeds whose paired interval vs raw audio lies above / below 0;
    ``seeds``) and ``caption_seeds.md``. ``manifest``: the demo's manifest.json (right animals)."""
    clip_info = json.loads(Path(manifest).read_text()).get("clips") if manifest else None
    tables = [(Path(folder), seed_values(_systems(Path(folder)), clip_info)) for folder in seed_dirs]
    first = tables[0][1]
    metrics = [k for k, _ in CAPTION_METRICS if all(k in row for _, t in tables for row in t.values())]
    metrics += [RIGHT_ANIMALS] if clip_info else []
    paired = [k for k in metrics if any(f"{k}_diff" in row for row in first.values())]
    versus = [k for k in metrics if any(f"{k}_vs" in row for row in first.values())]  # compare_to
    keys = metrics + [f"{k}{suffix}" for k in paired for suffix in ("_diff", "_diff_lo", "_diff_hi")]
    keys += [f"{k}{suffix}" for k in versus for suffix in ("_vs", "_vs_lo", "_vs_hi")]
    stats = across_seeds(tables, keys, "seeds' caption tests")
    n = len(tables)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    header = ["row"] + [f"{k}_{s}" for k in metrics for s in ("mean", "std")]
    header += [f"{k}_{s}" for k in paired for s in ("diff_mean", "diff_std", "above", "below")]
    header += [f"{k}_{s}" for k in versus for s in ("vs_mean", "vs_std", "vs_above", "vs_below")] + ["seeds"]
    lines = []
    for row, v in stats.items():
        cells = [f"{x:.6g}" for k in metrics for x in (v[k].mean(), v[k].std(ddof=1))]
        for k, d in [*((k, "_diff") for k in paired), *((k, "_vs") for k in versus)]:
            d, lo, hi = v[f"{k}{d}"], v[f"{k}{d}_lo"], v[f"{k}{d}_hi"]
            spread = defined_mean_std(d)  # a row not compared (raw audio, the ceiling, the compare_to row itself): nan
            cells += [f"{x:.6g}" for x in spread] + [str(int(np.sum(lo > 0))), str(int(np.sum(hi < 0)))]
        lines.append([row, *cells, str(n)])
    with open(out / "caption_seeds.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([header, *lines])
    titles = {**dict(CAPTION_METRICS), RIGHT_ANIMALS: "right animals"}
    shown = [(k, "_diff", "raw") for k in SHOWN_PAIRED if k in paired] + [(k, "_vs", "compare_to") for k in SHOWN_PAIRED if k in versus]
    versus_cells = "".join(f" | {titles[k]} vs {w}: mean ± std | seeds above / below 0" for k, _, w in shown)
    md = ["| row | " + " | ".join(titles[k] for k in metrics) + versus_cells + " |"]
    md.append("|---|" + "---:|" * (len(metrics) + 2 * len(shown)))
    for row, v in stats.items():
        cells = [f"{v[k].mean():.4f} ± {v[k].std(ddof=1):.4f}" for k in metrics]
        for k, suffix, _ in shown:
            d = v[f"{k}{suffix}"][~np.isnan(v[f"{k}{suffix}"])]
            if len(d) < 2:
                cells += ["", ""]
                continue
            above, below = int(np.sum(v[f"{k}{suffix}_lo"] > 0)), int(np.sum(v[f"{k}{suffix}_hi"] < 0))
            cells += [f"{d.mean():+.4f} ± {d.std(ddof=1):.4f}", f"{above} / {below} of {n}"]
        md.append(f"| {row} | " + " | ".join(cells) + " |")
    note = [
        "",
        f"Mean ± standard deviation over {n} seeds (each: the bridges and captioners trained, and the rows tested, with that seed;",
        "the encoder and the feature store are shared). 'vs raw': this row minus its setting's raw-audio row on the same clips;",
        "'seeds above / below 0': the seeds whose 95 % paired bootstrap interval of that difference lies above / below 0",
        "(the text ceiling is scored leave-one-out and not paired). 'vs compare_to': the same, against the setting's row through",
        "the recipe's compare_to bridge (e.g. the regressor).",
        *(f"- {p}" for p, _ in tables),
    ]
    write_atomic(out / "caption_seeds.md", "\n".join(md + note) + "\n")
    return out / "caption_seeds.csv", out / "caption_seeds.md"
