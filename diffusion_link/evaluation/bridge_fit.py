"""Does a bridge treat the clips it was fitted on differently from clips it never saw? (issue 19, point 14)

A supervised captioner "+ bridge" trains on its training clips passed through a bridge fitted on those same
clips, and is tested on bridged clips the bridge never saw. If the bridge maps seen clips closer to their
texts than unseen ones (it memorised them), the captioner trains on cleaner inputs than it is tested on;
cross-fitting (a bridge fitted on one half bridges the other) would then be needed. This module measures
that difference, per split (the training split, and held-out splits such as val and test):

* **per-clip cosine**: for each clip, the mean over its references of cos(bridged audio, reference); and
  the same for the raw audio. The bridge's **gain** on a clip is the difference of the two (paired within
  the clip), so that splits of different difficulty (the demo's val / test hold animal pairs the training
  split lacks) are compared by what the bridge adds, not by their raw distance;
* **train − held-out**: the difference of the mean gain (and of the mean bridged cosine) between the
  training split and a held-out split, with a 95 % two-sample percentile bootstrap interval (each split's
  clips resampled on their own: different clips, nothing to pair). A memorising bridge gives a positive
  difference whose interval excludes 0; a smooth one, an interval around 0;
* **Fréchet and centroid distance** of the bridged (and raw) audio to the split's texts, on equal numbers
  of clips and one reference per clip, its first (both are biased by N, and on the text side N counts
  references: AudioCaps' training split has one per clip, val and test five): the held-out split's value
  with its basic bootstrap interval, beside the training split's on ``subsets`` random subsets of the
  held-out split's size (their mean and the 2.5 – 97.5 % range over the subsets).

Every input is L2-normalised first. Pure math on arrays: ``diffusion_link.bridge.fit_check`` reads a store
and a bridge export and calls :func:`seen_unseen`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from diffusion_link.evaluation.gap import Clips, gap_statistics
from diffusion_link.evaluation.gap_intervals import bootstrap_weights

#: the distribution metrics compared on equal clip counts
DISTANCES = ("frechet", "centroid_distance")
#: the RBF bandwidth handed to gap_statistics, which computes no MMD² here (``only`` DISTANCES)
NO_MMD = 1.0


@dataclass
class SplitEmbeddings:
    """One split's clips: bridged audio (N, D), raw audio (N, D), every reference (M, D) and the clip each
    reference belongs to (M,)."""

    bridged: np.ndarray
    raw: np.ndarray
    refs: np.ndarray
    owner: np.ndarray

    def clips(self, which: str, keep: np.ndarray | None = None) -> Clips:
        x = self.bridged if which == "bridged" else self.raw
        n = len(x)
        keep = np.arange(n) if keep is None else np.asarray(keep)
        chosen = np.isin(self.owner, keep)
        rank = np.full(n, -1)
        rank[keep] = np.arange(len(keep))
        n_refs = torch.from_numpy(np.bincount(rank[self.owner[chosen]], minlength=len(keep)))
        order = np.argsort(rank[self.owner[chosen]], kind="stable")
        return Clips.from_flat(torch.from_numpy(x[keep]), torch.from_numpy(self.refs[chosen][order]), n_refs, key=torch.from_numpy(keep))

    def first_references(self) -> "SplitEmbeddings":
        """The same clips with one reference each, the first listed: splits with different reference counts
        (AudioCaps train 1, val / test 5) then give the distances the same number of texts per clip."""
        owner = np.asarray(self.owner)
        _, first = np.unique(owner, return_index=True)
        if len(first) != len(self.raw):
            raise ValueError(f"{len(self.raw) - len(first)} of {len(self.raw)} clips have no reference: every clip needs at least one")
        return SplitEmbeddings(self.bridged, self.raw, self.refs[first], owner[first])


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def per_clip_cosine(x: np.ndarray, refs: np.ndarray, owner: np.ndarray) -> np.ndarray:
    """(N,): each clip's mean over its references of cos(x_i, reference)."""
    x, refs, owner = _unit(x), _unit(refs), np.asarray(owner)
    sums = np.bincount(owner, weights=(x[owner] * refs).sum(-1), minlength=len(x))
    return sums / np.maximum(np.bincount(owner, minlength=len(x)), 1)


def two_sample_difference(a: np.ndarray, b: np.ndarray, resamples: int = 1000, seed: int = 0, confidence: float = 0.95) -> tuple[float, float, float]:
    """mean(a) − mean(b) with a percentile bootstrap interval in which ``a`` and ``b`` (different items:
    nothing to pair) are each resampled on their own (a mean is unbiased: percentile = basic here)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    diff = float(a.mean() - b.mean())
    if not resamples:
        return diff, float("nan"), float("nan")
    wa = bootstrap_weights(len(a), resamples, seed).numpy()
    wb = bootstrap_weights(len(b), resamples, seed + 1).numpy()
    reps = wa @ a / wa.sum(1) - wb @ b / wb.sum(1)
    tail = (1 - confidence) / 2
    lo, hi = np.quantile(reps, [tail, 1 - tail])
    return diff, float(lo), float(hi)


def _mean_interval(v: np.ndarray, resamples: int, seed: int) -> tuple[float, float, float]:
    if not resamples:
        return float(v.mean()), float("nan"), float("nan")
    w = bootstrap_weights(len(v), resamples, seed).numpy()
    lo, hi = np.quantile(w @ v / w.sum(1), [0.025, 0.975])
    return float(v.mean()), float(lo), float(hi)


def _distances(split: SplitEmbeddings, n: int, subsets: int, resamples: int, seed: int) -> dict[str, float]:
    """Fréchet and centroid distance to the split's texts (one reference per clip, its first): on all its
    clips with a basic interval when it has n of them, else the mean and 2.5–97.5 % range over ``subsets``
    random subsets of n clips."""
    out, split = {}, split.first_references()
    for which in ("bridged", "raw"):
        if len(split.raw) == n:
            stats = gap_statistics(split.clips(which), bootstrap=resamples, seed=seed, mmd_sigma=NO_MMD, only=DISTANCES)
            for m in DISTANCES:
                e = stats[m]
                out[f"{which}_{m}"], out[f"{which}_{m}_lo"], out[f"{which}_{m}_hi"] = (e.value, e.lo, e.hi) if resamples else (e.value, np.nan, np.nan)
            continue
        rng = np.random.default_rng(seed)
        values = {m: [] for m in DISTANCES}
        for _ in range(subsets):
            keep = np.sort(rng.choice(len(split.raw), n, replace=False))
            stats = gap_statistics(split.clips(which, keep), mmd_sigma=NO_MMD, only=DISTANCES)
            for m in DISTANCES:
                values[m].append(stats[m].value)
        for m in DISTANCES:
            v = np.asarray(values[m])
            out[f"{which}_{m}"], (out[f"{which}_{m}_lo"], out[f"{which}_{m}_hi"]) = float(v.mean()), np.quantile(v, [0.025, 0.975])
    return out


def seen_unseen(
    splits: dict[str, SplitEmbeddings], train: str = "train", resamples: int = 1000, subsets: int = 20, distance_resamples: int = 200, seed: int = 0
) -> dict[str, dict[str, float]]:
    """Per split: ``clips``; ``bridged_cosine``, ``raw_cosine``, ``gain`` (means of the per-clip values, each
    with ``_lo`` / ``_hi``); for every split but ``train``: ``gain_train_minus``, ``cosine_train_minus`` (the
    training split's mean minus this split's, with ``_lo`` / ``_hi``); and ``<bridged|raw>_<frechet|
    centroid_distance>`` (+ ``_lo`` / ``_hi``; each clip's first reference only) on as many clips as the smallest held-out split (the training
    split's on ``subsets`` random subsets of that size; a held-out split's with its basic interval from
    ``distance_resamples`` resamples). Also ``n_distance``: that clip count."""
    if train not in splits:
        raise ValueError(f"no training split {train!r} among the splits given ({sorted(splits)})")
    held = [s for s in splits if s != train]
    if not held:
        raise ValueError("seen vs unseen needs at least one held-out split beside the training split")
    per_clip = {}
    for name, s in splits.items():
        if len(s.raw) < 2:
            raise ValueError(f"split {name!r} has {len(s.raw)} clip(s); the comparison needs at least 2")
        bridged, raw = per_clip_cosine(s.bridged, s.refs, s.owner), per_clip_cosine(s.raw, s.refs, s.owner)
        per_clip[name] = {"bridged_cosine": bridged, "raw_cosine": raw, "gain": bridged - raw}
    n = min(len(splits[s].raw) for s in held)
    out = {}
    for name, s in splits.items():
        row = out[name] = {"clips": float(len(s.raw)), "n_distance": float(n)}
        for key, v in per_clip[name].items():
            row[key], row[f"{key}_lo"], row[f"{key}_hi"] = _mean_interval(v, resamples, seed)
        if name != train:
            for key, out_key in (("gain", "gain_train_minus"), ("bridged_cosine", "cosine_train_minus")):
                row[out_key], row[f"{out_key}_lo"], row[f"{out_key}_hi"] = two_sample_difference(per_clip[train][key], per_clip[name][key], resamples, seed)
        row.update(_distances(s, n, subsets, distance_resamples, seed))
    return out


def format_seen_unseen(results: dict[str, dict[str, float]], train: str = "train") -> str:
    """Markdown: one row per split (per-clip cosine, gain, train − split, the distances on equal clip counts)."""

    def cell(row: dict, key: str, signed: bool = False) -> str:
        f = "+.4f" if signed else ".4f"
        if key not in row:
            return ""
        lo, hi = row.get(f"{key}_lo", np.nan), row.get(f"{key}_hi", np.nan)
        return f"{row[key]:{f}}" + ("" if np.isnan(lo) else f" [{lo:{f}}, {hi:{f}}]")

    n = int(next(iter(results.values()))["n_distance"])
    head = ["split", "clips", "cos(bridged, refs)", "cos(raw, refs)", "gain", "gain: train − split", "cos: train − split"]
    head += [f"bridged Fréchet ({n} clips)", "raw Fréchet", f"bridged centroid ({n} clips)", "raw centroid"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for name, row in results.items():
        cells = [f"{name}{' (fitted on)' if name == train else ''}", f"{int(row['clips'])}"]
        cells += [cell(row, k) for k in ("bridged_cosine", "raw_cosine")] + [cell(row, "gain", True)]
        cells += [cell(row, "gain_train_minus", True), cell(row, "cosine_train_minus", True)]
        cells += [cell(row, f"{w}_{m}") for m in DISTANCES for w in ("bridged", "raw")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


__all__ = ["SplitEmbeddings", "format_seen_unseen", "per_clip_cosine", "seen_unseen", "two_sample_difference"]
