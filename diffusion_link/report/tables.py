"""The captioning table of the report page and the run's summary, with paired comparisons.

Every row is compared with the raw-audio row of the same captioner setting (zero-shot rows with
"zero-shot, raw audio", supervised rows with "supervised, raw audio") **on the same clips**: the two
rows' per-clip values (``predictions.csv``: the metrics whose corpus score is a mean over clips, e.g.
CIDEr-D and ROUGE-L; on the demo, whether the caption names exactly the clip's animals) are matched by
clip id, in clip-id order, and the difference of their means gets a 95 % percentile bootstrap interval
in which both rows are resampled with the *same* clips (:func:`paired_difference`). Two rows whose clip
sets differ are not compared (the cell says so). Bold means the paired interval excludes 0. A relative
change ("+28 %") is printed only beside the difference, and as "n/a" when the raw row's value is
indistinguishable from zero (its own interval includes 0, or it is below ``ZERO_FLOOR``).

The text ceiling is scored against references its input did not come from (leave-one-out), so its
caption metrics are not paired with the audio rows'; its animal rate is.

A row whose captions are (nearly) all the same is flagged "ignores its input"
(:func:`diffusion_link.evaluation.captioning.diversity`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from diffusion_link.report.versus import versus_named

log = logging.getLogger(__name__)

#: the caption metrics shown, in order (those that every system has)
CAPTION_METRICS = [
    ("bleu_1", "BLEU-1"),
    ("bleu_4", "BLEU-4"),
    ("meteor", "METEOR"),
    ("rouge_l", "ROUGE-L"),
    ("cider_d", "CIDEr-D"),
    ("spice", "SPICE"),
    ("spider", "SPIDEr"),
    ("fense", "FENSE"),
]
#: bootstrap resamples (and their seed) of the paired intervals: one draw of clips shared by every row
PAIRED_RESAMPLES = 1000
PAIRED_SEED = 0
#: a raw row's value below this (in the metric's own units; a rate: 1 point) is no base for a relative change
ZERO_FLOOR = 0.01
RIGHT_ANIMALS = "right_animals"


class ClipsDiffer(ValueError):
    """Two rows were tested on different clips: they are not compared."""


@dataclass
class Paired:
    """``other`` minus ``base`` over the same clips, with 95 % paired bootstrap intervals."""

    clips: int
    base: float
    other: float
    diff: float
    lo: float
    hi: float
    base_lo: float
    base_hi: float

    @property
    def excludes_zero(self) -> bool:
        return self.lo > 0 or self.hi < 0

    def relative(self, floor: float = ZERO_FLOOR) -> float | None:
        """The change relative to ``base``; None when ``base`` is indistinguishable from zero."""
        if self.base_lo <= 0 <= self.base_hi or abs(self.base) < floor:
            return None
        return self.diff / self.base


def matched_clips(base: dict[str, float], other: dict[str, float]) -> list[str]:
    """The two rows' common clips in clip-id order; refused when the clip sets differ."""
    if set(base) != set(other):
        common = len(set(base) & set(other))
        raise ClipsDiffer(f"the rows were tested on different clips ({len(base)} and {len(other)} clips, {common} in common)")
    return sorted(base)


def paired_difference(
    base: dict[str, float], other: dict[str, float], resamples: int = PAIRED_RESAMPLES, seed: int = PAIRED_SEED, confidence: float = 0.95
) -> Paired:
    """Mean of ``other`` minus mean of ``base`` (clip id -> per-clip value), with its percentile bootstrap
    interval: each resample draws clips (ids in sorted order, so the order of either input does not
    matter) and both rows are averaged over the *same* drawn clips. Also ``base``'s own interval, from
    the same resamples."""
    from diffusion_link.evaluation.gap import bootstrap_weights

    clips = matched_clips(base, other)
    if not clips:
        raise ClipsDiffer("no clips to compare")
    b = np.array([base[c] for c in clips], dtype=np.float64)
    o = np.array([other[c] for c in clips], dtype=np.float64)
    w = bootstrap_weights(len(clips), resamples, seed).numpy()
    tail = (1 - confidence) / 2
    if len(w):
        lo, hi = np.quantile(w @ (o - b) / w.sum(1), [tail, 1 - tail])
        base_lo, base_hi = np.quantile(w @ b / w.sum(1), [tail, 1 - tail])
    else:
        lo = hi = base_lo = base_hi = float("nan")
    return Paired(len(clips), float(b.mean()), float(o.mean()), float((o - b).mean()), float(lo), float(hi), float(base_lo), float(base_hi))


def format_difference(p: Paired, digits: int = 3, scale: float = 1.0, unit: str = "") -> str:
    """ "+0.500 [+0.310, +0.690]" (``scale`` 100 and unit " pts" for rates)."""
    d, lo, hi = (v * scale for v in (p.diff, p.lo, p.hi))
    return f"{d:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}]{unit}"


def format_relative(p: Paired) -> str:
    rel = p.relative()
    return "n/a" if rel is None else f"{rel:+.1%}"


def is_raw(system) -> bool:
    """The raw-audio row of its setting (audio input, no bridge) from a plain captioner: one trained on
    clean text or audio, not with noise injection or through a bridge (``captioner_training``), so that
    a baseline captioner tested on raw audio (noise injection) is a row compared with raw audio, never
    the baseline of its setting."""
    training = system.report.get("captioner_training") or {}
    plain = not training.get("noise_std") and not training.get("train_through")
    return plain and system.raw_audio


def is_ceiling(system) -> bool:
    return system.report.get("input", "audio") != "audio"


def per_clip(system, metric: str, clip_info: dict | None = None) -> dict[str, float]:
    """clip id -> the row's value on that clip: a ``predictions.csv`` column, or (``right_animals``, the
    demo) 1 when the caption names exactly the clip's animals (a correct class word counts on a build with
    varied references), else 0."""
    if metric == RIGHT_ANIMALS:
        from diffusion_link.data.demo import names_right_animals

        return {c: float(names_right_animals(r["candidate"], clip_info[c])) for c, r in system.rows.items()}
    return {c: float(r[metric]) for c, r in system.rows.items() if r.get(metric) not in (None, "")}


def diversity_of(system) -> dict:
    """The row's distinct captions and whether it ignores its input (scores.json's, else from its captions)."""
    from diffusion_link.evaluation.captioning import diversity

    return system.report.get("diversity") or diversity([r["candidate"] for r in system.rows.values()])


def _flags(system) -> list[str]:
    spread = diversity_of(system)
    if spread.get("ignores_input"):
        n = spread["distinct_captions"]
        return [f"ignores its input: {n} distinct caption{'s' if n != 1 else ''} for {spread['clips']} clips"]
    return []


def _compare(base, system, metric: str, clip_info: dict | None, warnings: list[str]) -> Paired | str:
    try:
        return paired_difference(per_clip(base, metric, clip_info), per_clip(system, metric, clip_info))
    except ClipsDiffer as error:
        warnings.append(f"{system.setting} / {system.name} vs {base.name}: {error}; not compared")
        return "clips differ"


def caption_table_rows(systems: list, clip_info: dict | None = None) -> dict:
    """The captioning table: ``headers`` (the metrics every system has) and ``rows``: setting, system,
    ``cells`` ("value ± half-width"), ``versus`` (CIDEr-D minus the setting's raw-audio row's, with its
    paired interval and the relative change) and ``bold`` (that interval excludes 0), ``paired`` (the
    difference of every per-clip metric in ``paired_headers``), ``flags`` ("ignores its input"), and with
    ``clip_info`` (the demo's) ``animals`` (right animals, right on single-animal clips, distinct captions
    / animal combinations, the paired difference of right animals in points, its bold), ``named`` (the same
    paired cells against the setting's compare_to row: :func:`diffusion_link.report.versus.versus_named`, or
    None). Also ``skipped``
    metric warnings, ``warnings`` (rows not compared), ``notes`` (the legend)."""
    keys = [(k, t) for k, t in CAPTION_METRICS if systems and all(k in s.report.get("scores", {}) for s in systems)]
    paired_keys = [(k, t) for k, t in CAPTION_METRICS if systems and all(s.rows and k in next(iter(s.rows.values())) for s in systems)]
    raw = {}
    for s in systems:
        if is_raw(s):
            raw.setdefault(s.setting, s)
    rows, warnings = [], []
    for s in systems:
        scores = s.report.get("scores", {})
        cells = []
        for key, _ in keys:
            cell = f"{scores[key]:.4f}"
            if f"{key}_lo" in scores:
                cell += f" ± {(scores[f'{key}_hi'] - scores[f'{key}_lo']) / 2:.3f}"
            cells.append(cell)
        base = raw.get(s.setting)
        compared = base is not None and base is not s
        row = {"setting": s.setting, "system": s.name, "cells": cells, "versus": "", "bold": False, "paired": [], "flags": _flags(s)}
        row["folder"] = s.folder.as_posix()
        for key, _ in paired_keys:
            if not compared or is_ceiling(s):
                row["paired"].append({"text": "", "bold": False})
                continue
            p = _compare(base, s, key, None, warnings)
            text, bold = (p, False) if isinstance(p, str) else (format_difference(p), p.excludes_zero)
            row["paired"].append({"text": text, "bold": bold})
            if key == "cider_d":
                row["versus"], row["bold"] = text + ("" if isinstance(p, str) else f" ({format_relative(p)})"), bold
        if compared and is_ceiling(s) and s.report.get("scored_against", "").startswith("references 2"):
            row["versus"] = "not paired (leave-one-out)"
        if clip_info:
            from diffusion_link.data.demo import animal_accuracy

            acc = animal_accuracy({c: r["candidate"] for c, r in s.rows.items()}, clip_info)
            row["animals"] = [
                f"{acc['exact_animals_all']:.0%}",
                f"{acc['exact_animals_single']:.0%}",
                f"{acc['distinct_captions']} / {acc['distinct_combinations']}",
            ]
            p = _compare(base, s, RIGHT_ANIMALS, clip_info, warnings) if compared else ""
            text, bold = (p, False) if isinstance(p, str) else (format_difference(p, 0, 100, " pts"), p.excludes_zero)
            row["animals"].append(text)
            row["animals_bold"] = bold
        row["named"] = versus_named(systems, s, [k for k, _ in paired_keys], clip_info, warnings)  # compare_to (report/versus.py)
        rows.append(row)
    for w in dict.fromkeys(warnings):
        log.warning(w)
    named: dict[str, str] = {}  # setting -> its compare_to row's name (each setting has its own row through the bridge)
    for r in rows:
        if r["named"] and r["named"]["name"]:
            named.setdefault(r["setting"], r["named"]["name"])
    versus_note = f"vs compare_to row: the same paired comparison with the setting's row through the compare_to bridge ({named_rows(named)}); bold the same."
    return {
        "headers": [t for _, t in keys],
        "paired_headers": [t for _, t in paired_keys],
        "animal_headers": ["right animals", "right (single)", "distinct", "right animals vs raw"] if clip_info else [],
        "rows": rows,
        "skipped": sorted({w for s in systems for w in s.report.get("skipped_metrics", [])}),
        "warnings": list(dict.fromkeys(warnings)),
        "notes": legend(systems) + ([versus_note] if named else []),
        "named": named,
    }


def named_rows(named: dict[str, str]) -> str:
    """Each setting's compare_to row, e.g. ``zero-shot: zero-shot + regressor; supervised: supervised + regressor``."""
    return "; ".join(f"{setting}: {name}" for setting, name in named.items())


def legend(systems: list) -> list[str]:
    """What the table's comparisons and flags mean."""
    from diffusion_link.evaluation.captioning import IGNORES_INPUT_FRACTION

    notes = [
        "vs raw: this row minus the raw-audio row of the same setting, on the same clips (matched by clip id), "
        f"[95 % paired bootstrap interval: {PAIRED_RESAMPLES} resamples of the clips, the same clips for both rows]; "
        "bold: the interval excludes 0. The relative change beside it is n/a when the raw row's value is "
        f"indistinguishable from zero (its own interval includes 0, or it is below {ZERO_FLOOR:g})."
    ]
    if any(is_ceiling(s) for s in systems):
        notes.append(
            "text ceiling: fed the text embedding of each clip's reference 1 and scored against the other references only "
            "(leave-one-out: one reference fewer per clip, and CIDEr-D's IDF over those references), so its caption metrics "
            "are not paired with the audio rows'."
        )
    notes += _baseline_notes(systems)
    notes.append(f"ignores its input: one caption for every clip, or distinct captions at most {IGNORES_INPUT_FRACTION:.0%} of the clips.")
    return notes


def _baseline_notes(systems: list) -> list[str]:
    """What the field's baselines among the rows are, and where they differ from their sources."""
    trained = [s.report.get("captioner_training") or {} for s in systems]
    notes = []
    if through := next((t["train_through"] for t in trained if t.get("train_through")), None):
        notes.append(
            f"Diffusion Bridge's captioner: trained on its text embeddings passed through the bridge (noised to t = {through['t_start']}, "
            "DDIM back) and tested through it, with the raw (not EMA) weights, as the source does; the network differs: "
            "our residual MLP denoiser where the source has a 1-D U-Net."
        )
    if noise := next((t["noise_std"] for t in trained if t.get("noise_std")), None):
        notes.append(f"noise injection (CapDec; WSAC for audio): the zero-shot captioner trained on unit text embeddings plus N(0, {noise:g}^2 I) noise.")
    if any(s.report.get("bridge") == "projection-decoding" for s in systems):
        notes.append("projection decoding (DeCap; DRCap without retrieval): softmax(cos(a, T) / tau) @ T over the training split's text embeddings.")
    return notes
