"""Modality-gap metrics over clips, as a torchmetrics ``Metric`` (accumulates over batches, gathers
across processes), with bootstrap intervals over clips, and the gap table: several rows (methods)
compared on the same clips, with paired intervals of each row's difference from a baseline row.

A clip brings one (raw or bridged) audio embedding x_i and its R_i reference text embeddings
c_i1..c_iR. Every metric L2-normalises its inputs. Which set each metric compares:

* **paired cosine** -- mean over every (clip, reference) pair of cos(x_i, c_ir);
* **centroid distance, cone, Fréchet, MMD², probe** -- the *distinct* clips' audio {x_i} against all
  reference texts {c_ir}: a clip's audio is never repeated once per reference (that repetition
  biases MMD², the cone and the Fréchet floor, and lets a probe see the same vector on both sides);
* MMD² and the centroid distance leave out same-clip pairs (x_i with its own c_ir, and c_ir with
  c_is), which are correlated by construction, so identical distributions give ~0 whatever the number
  of references. The centroid distance is the square root of the unbiased estimate of ‖μ_x − μ_c‖²
  (the linear-kernel MMD², 0 where that estimate is negative): the plain ‖x̄ − c̄‖ is biased upward
  by the clips' noise, by ~√(tr Σ / N), which is the whole value when the distributions are the same;
* the **linear probe** is cross-fitted by clip: the clips are split into folds (a clip's audio and
  references in the same fold), each fold is scored by a probe trained on the others whose C is chosen
  by cross-validation (grouped by clip) on that training part, and the balanced accuracy is taken over
  every clip's held-out prediction (0.5 = indistinguishable);
* **R@k** (audio -> text) ranks each clip's best own reference among all texts of the set; a text that
  is identical to one of the clip's own references (the same caption, given as text, or else the same
  embedding) counts as its own, so template captions repeated word for word are not misses.

Intervals (:mod:`diffusion_link.evaluation.gap_intervals`): the *basic* bootstrap interval over clips
(clips, never pairs, are drawn; every metric recomputed on each resample, except the probe, whose
held-out predictions stay fixed, and R@k, whose gallery stays the full set). Fréchet's value is biased
upward at small N; its basic interval corrects for that bias, so it may lie below the value.

Clips are put in a canonical order: by a clip key when one is given (e.g. the store row; a key seen
twice, as a distributed sampler's padding repeats, counted once), else by content. The rows of a gap
table must carry the same keys: then they see the same clips in the same order, the same resamples and
the same probe folds, and their differences are paired.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torchmetrics import Metric

from diffusion_link.evaluation.gap_measures import _MMD, Clips, _a2t_hits, _unit, centroid_distance, centroid_sq, cone_cosine, frechet, paired_cosine, text_ids
from diffusion_link.evaluation.gap_intervals import basic_interval, bias_corrected, bootstrap_weights, mean_interval, median_sigma
from diffusion_link.evaluation.gap_probe import CrossFittedProbe
from diffusion_link.evaluation.gap_retrieval import RetrievalRecall, TextToAudioRecall
from diffusion_link.evaluation.gap_versus import check_compare_to, paired_columns, versus_suffix

__all__ = [
    "GAP_METRICS",
    "Clips",
    "Estimate",
    "GapMetrics",
    "RetrievalRecall",
    "TextToAudioRecall",
    "bootstrap_weights",
    "gap_statistics",
    "gap_table",
    "mean_interval",
]

#: the gap table's metrics, in column order
GAP_METRICS = ("paired_cosine", "centroid_distance", "cone_cosine", "probe_accuracy", "frechet", "mmd", "R@1", "R@5", "R@10")
#: metrics whose value is biased at small N and whose bias-corrected value the table records (``<name>_bc``)
BIASED = ("frechet",)
#: the range of a bounded metric (R@k: [0, 1]); a basic interval reaching past it is cut at it, which
#: cannot lose coverage (Fréchet and MMD² are not cut: their estimates can fall below 0, and so may their intervals)
BOUNDS = {"paired_cosine": (-1.0, 1.0), "cone_cosine": (-1.0, 1.0), "probe_accuracy": (0.0, 1.0)}


@dataclass
class Estimate:
    value: float
    lo: float | None = None
    hi: float | None = None
    bc: float | None = None  # the bootstrap bias-corrected value (metrics in BIASED)


@contextmanager
def _flush_denormals():
    """LAPACK's eigen and singular-value solvers slow down ~50x on these covariances' denormal
    intermediates (7 s instead of 0.1 s for D = 512); flushing them changes nothing above 1e-308."""
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


def _functions(s: Clips, probe_seed: int, sigma: float, ks: tuple[int, ...]) -> dict:
    """Each metric's maker: called, it returns a function of clip weights (R, N) -> (R,)."""
    recall = lambda k: (lambda hits: lambda v: (v @ hits) / v.sum(1))(_a2t_hits(s, k))  # noqa: E731
    return {  # built on first use: the kernel and the probe are the costly parts
        "paired_cosine": lambda: lambda v: paired_cosine(s, v),
        "centroid_distance": lambda: lambda v: centroid_distance(s, v),
        "cone_cosine": lambda: lambda v: cone_cosine(s, v),
        "probe_accuracy": lambda: CrossFittedProbe(s.x, s.c, s.owner, probe_seed),
        "frechet": lambda: lambda v: frechet(s, v),
        "mmd": lambda: _MMD(s, sigma),
        **{f"R@{k}": (lambda k=k: recall(k)) for k in ks},
    }


def _replicates(s: Clips, w: torch.Tensor, probe_seed: int, sigma: float, ks: tuple[int, ...], only) -> dict[str, tuple[float, np.ndarray]]:
    """Each metric's value and its replicates on the resamples ``w`` (NaN where a resample has too few clips)."""
    functions = _functions(s, probe_seed, sigma, ks)
    if unknown := set(only or ()) - set(functions):
        raise ValueError(f"unknown gap metrics {sorted(unknown)}; known: {sorted(functions)}")
    ones = torch.ones(1, s.n, dtype=torch.float64)
    out = {}
    for name, make in functions.items():
        if only is None or name in only:
            fn = make()
            out[name] = (float(fn(ones)[0]), fn(w).numpy() if len(w) else np.zeros(0))
    return out


def _centroid_interval(s: Clips, w: torch.Tensor, confidence: float) -> tuple[float, float]:
    """The basic interval of the unbiased square ‖μ_x − μ_c‖² (which can go below 0), then its root."""
    ones = torch.ones(1, s.n, dtype=torch.float64)
    lo, hi = basic_interval(float(centroid_sq(s, ones)[0]), centroid_sq(s, w).numpy(), confidence)
    return float(np.sqrt(max(lo, 0.0))), float(np.sqrt(max(hi, 0.0)))


def gap_statistics(
    s: Clips,
    bootstrap: int = 0,
    seed: int = 0,
    probe_seed: int = 0,
    mmd_sigma: float | None = None,
    confidence: float = 0.95,
    ks: tuple[int, ...] = (1, 5, 10),
    only: tuple[str, ...] | None = None,
) -> dict[str, Estimate]:
    """Every gap-table metric of a clip set (or ``only`` those named), with a basic bootstrap interval
    over clips when ``bootstrap`` > 0 (the same resamples for every metric). ``mmd_sigma``: the RBF
    bandwidth (default: the median heuristic on this set's pooled audio and text)."""
    table = gap_table({"row": s}, bootstrap=bootstrap, seed=seed, probe_seed=probe_seed, mmd_sigma=mmd_sigma, confidence=confidence, ks=ks, only=only)
    row = table["row"]
    return {
        name: Estimate(row[name], row.get(f"{name}_lo"), row.get(f"{name}_hi"), row.get(f"{name}_bc"))
        for name in row
        if not name.endswith(("_lo", "_hi", "_bc", "_diff")) and name != "mmd_sigma"
    }


def gap_table(
    rows: dict[str, Clips],
    baseline: str | None = None,
    bootstrap: int = 0,
    seed: int = 0,
    probe_seed: int = 0,
    mmd_sigma: float | None = None,
    confidence: float = 0.95,
    ks: tuple[int, ...] = (1, 5, 10),
    only: tuple[str, ...] | None = None,
    compare_to: tuple[str, ...] = (),
) -> dict[str, dict[str, float]]:
    """The gap table: ``{row: {metric: value, <metric>_lo/_hi (with bootstrap), <metric>_bc (BIASED
    metrics), <metric>_diff, _diff_lo, _diff_hi (each row minus ``baseline``, with the paired interval),
    <metric>_vs_<slug>, _lo, _hi (each row minus each row named in ``compare_to``, the same way:
    :func:`~diffusion_link.evaluation.gap_versus.versus_suffix`), mmd_sigma}}``.
    Every row must carry the same clip keys (the same clips, in the same order); each row
    then gets the same resamples, the same probe folds and one RBF bandwidth ``mmd_sigma`` (default: the
    median heuristic on the baseline's pooled audio and text, else the first row's)."""
    names = list(rows)
    if not names:
        raise ValueError("a gap table needs at least one row")
    if baseline is not None and baseline not in rows:
        raise ValueError(f"baseline {baseline!r} is not a row of the table ({names})")
    against = {name: versus_suffix(name) for name in check_compare_to(compare_to, rows)}
    base = rows[baseline or names[0]]
    for name, s in rows.items():
        if s.n < 2:
            raise ValueError(f"the gap metrics need at least 2 distinct clips, got {s.n} ({name})")
        if len(rows) > 1 and (s.key is None or base.key is None or not torch.equal(s.key, base.key)):
            raise ValueError(f"row {name!r} is not evaluated on the baseline's clips (the same clip keys, in the same order): rows cannot be paired")
    sigma = float(mmd_sigma) if mmd_sigma is not None else median_sigma(torch.cat([base.x, base.c]), limit=None)
    if not sigma > 0:
        raise ValueError(f"the MMD bandwidth must be positive, got {sigma}")
    w = bootstrap_weights(base.n, bootstrap, seed)
    with _flush_denormals():
        reps = {name: _replicates(s, w, probe_seed, sigma, ks, only) for name, s in rows.items()}
    out = {}
    for name in names:
        row = out[name] = {}
        for metric, (value, r) in reps[name].items():
            row[metric] = value
            if bootstrap:
                if metric == "centroid_distance":
                    row[f"{metric}_lo"], row[f"{metric}_hi"] = _centroid_interval(rows[name], w, confidence)
                else:
                    lo, hi = basic_interval(value, r, confidence)
                    low, high = BOUNDS.get(metric, (-np.inf, np.inf)) if not metric.startswith("R@") else (0.0, 1.0)
                    row[f"{metric}_lo"], row[f"{metric}_hi"] = min(max(lo, low), high), max(min(hi, high), low)
                if metric in BIASED:
                    row[f"{metric}_bc"] = bias_corrected(value, r)
            for other, suffix in [*([(baseline, "_diff")] if baseline is not None else []), *against.items()]:
                base_value, base_reps = reps[other][metric]
                row.update({metric + k: v for k, v in paired_columns(suffix, value, r, base_value, base_reps, bootstrap, confidence, metric in BIASED).items()})
        row["mmd_sigma"] = sigma
    return out


class GapMetrics(Metric):
    """Collects clips (audio or bridged audio, padded references, reference counts; optionally each
    clip's ``key`` and its references' ``captions``) and computes :func:`gap_statistics`. ``compute()``
    returns each metric's value and, with ``bootstrap`` > 0, ``<name>_lo`` / ``<name>_hi``;
    :meth:`synced_clips` gives the clips (gathered over processes) for :func:`gap_table`."""

    full_state_update = False

    def __init__(self, bootstrap: int = 0, seed: int = 0, probe_seed: int = 0, mmd_sigma: float | None = None, **kw):
        super().__init__(**kw)
        self.options = dict(bootstrap=bootstrap, seed=seed, probe_seed=probe_seed, mmd_sigma=mmd_sigma)
        for state in ("xs", "cs", "n_refs", "keys", "text_ids"):
            self.add_state(state, [], dist_reduce_fx="cat")

    def update(
        self, x: torch.Tensor, refs: torch.Tensor, n_refs: torch.Tensor, key: torch.Tensor | None = None, captions: list[list[str]] | None = None
    ) -> None:
        valid = torch.arange(refs.shape[1], device=refs.device)[None] < n_refs[:, None]
        for name, given in (("keys", key), ("text_ids", captions)):
            if self.xs and bool(getattr(self, name)) != (given is not None):
                raise ValueError(f"GapMetrics.update: give {name} for every batch or for none")
        self.xs.append(_unit(x))
        self.cs.append(_unit(refs[valid]))
        self.n_refs.append(n_refs.long())
        if key is not None:
            self.keys.append(torch.as_tensor(key, device=x.device).long())
        if captions is not None:
            if [len(c) for c in captions] != n_refs.tolist():
                raise ValueError("GapMetrics.update: captions must list each clip's references (n_refs of them)")
            self.text_ids.append(text_ids(captions).to(x.device))

    def clips(self) -> Clips:
        def cat(state):  # synced states are tensors; a state never given (keys, captions) is empty: None
            state = torch.cat(state) if isinstance(state, list) and state else state
            return state if isinstance(state, torch.Tensor) and state.numel() else None

        return Clips.from_flat(cat(self.xs), cat(self.cs), cat(self.n_refs), cat(self.keys), cat(self.text_ids))

    def synced_clips(self) -> Clips:
        """The clips of every process (call it on every process, as ``compute``)."""
        with self.sync_context():
            return self.clips()

    def compute(self) -> dict[str, torch.Tensor]:
        out = {}
        for name, e in gap_statistics(self.clips(), **self.options).items():
            out[name] = torch.tensor(e.value, dtype=torch.float64)
            if e.lo is not None:
                out[f"{name}_lo"], out[f"{name}_hi"] = torch.tensor(e.lo, dtype=torch.float64), torch.tensor(e.hi, dtype=torch.float64)
        return out
