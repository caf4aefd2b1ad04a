"""The gap report's figures that compare rows: one PCA panel per row, and each row's paired difference
from the baseline row (raw audio) with its interval.

* :func:`pca_panels` -- one small panel per row of the gap table: the text embeddings in grey behind the
  row's (bridged) audio, every panel on the same axes of one 2-D PCA, fitted once on the text and the
  raw audio (so a row that moves its audio towards the text is seen to move, on the same map);
* :func:`paired_difference_figure` -- per metric, each row's difference from the baseline
  (``<metric>_diff``) as a point with its paired interval (``_diff_lo``, ``_diff_hi``), read from the gap
  table as written (``gap_report.csv``), a line at 0; a filled point: the interval excludes 0 on the
  better side (the table's bold).

Every input is L2-normalised first, as every gap metric does.
"""

from __future__ import annotations

import math

import numpy as np

from diffusion_link.evaluation.report import BETTER, COLUMNS, _pyplot, better_than_baseline

#: the metrics of the paired-difference figure, where the report has them
DIFF_METRICS = ("frechet", "mmd", "centroid_distance", "probe_accuracy", "paired_cosine", "R@1")


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def pca_basis(text: np.ndarray, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The mean and the first two principal axes (2, D) of the text and raw audio embeddings together."""
    pooled = np.concatenate([_unit(text), _unit(audio)])
    mean = pooled.mean(0)
    _, _, vt = np.linalg.svd(pooled - mean, full_matrices=False)
    return mean, vt[:2]


def pca_panels(text: np.ndarray, audio: np.ndarray, rows: dict[str, np.ndarray], columns: int = 4):
    """One panel per row (``{name: (N, D) outputs}``, in table order): the text in grey, the row's points
    on top, all panels on the axes of one PCA fitted on ``text`` and ``audio`` (raw), with the same limits."""
    if not rows:
        raise ValueError("pca_panels needs at least one row")
    mean, axes2 = pca_basis(text, audio)
    project = lambda x: (_unit(x) - mean) @ axes2.T  # noqa: E731
    t = project(text)
    points = {name: project(x) for name, x in rows.items()}
    every = np.concatenate([t, *points.values()])
    pad = 0.05 * (every.max(0) - every.min(0) + 1e-9)
    low, high = every.min(0) - pad, every.max(0) + pad
    columns = min(columns, len(rows))
    lines = math.ceil(len(rows) / columns)
    fig, grid = _pyplot().subplots(lines, columns, figsize=(3.0 * columns, 2.9 * lines), sharex=True, sharey=True, squeeze=False)
    for ax, (name, p) in zip(grid.flat, points.items()):
        ax.scatter(*t.T, s=5, c="0.75", label="text", rasterized=True)
        ax.scatter(*p.T, s=5, c="tab:red", alpha=0.6, label=name, rasterized=True)
        ax.set_title(name, fontsize=9)
        ax.set_xlim(low[0], high[0])
        ax.set_ylim(low[1], high[1])
        ax.tick_params(labelsize=7)
    for ax in list(grid.flat)[len(rows) :]:
        ax.remove()
    fig.supxlabel("PC 1 (of text + raw audio)", fontsize=9)
    fig.supylabel("PC 2", fontsize=9)
    fig.suptitle("Each row's audio (red) against the text (grey), on one PCA", fontsize=10)
    fig.tight_layout()
    return fig


def paired_difference_figure(results: dict[str, dict[str, float]], baseline: str, metrics: tuple[str, ...] = DIFF_METRICS, suffix: str = "_diff"):
    """Per metric (those every non-baseline row has a ``suffix`` column of: ``_diff`` from raw audio, or a
    compare_to row's ``_vs_<slug>``), each row's difference from ``baseline`` with its paired interval where
    the report has one; a dashed line at 0; a filled marker when the interval excludes 0 on the better side."""
    others = [m for m in results if m != baseline]
    shown = [k for k in metrics if others and all(f"{k}{suffix}" in results[m] for m in others)]
    if not shown:
        raise ValueError(f"the gap report has no paired differences from {baseline!r} to draw (run the gap analysis with a baseline)")
    titles = dict(COLUMNS)
    fig, axes = _pyplot().subplots(1, len(shown), figsize=(3.2 * len(shown), 0.45 * len(others) + 1.6), sharey=True, squeeze=False)
    ys = np.arange(len(others))[::-1]
    for ax, key in zip(axes[0], shown):
        for y, method in zip(ys, others):
            values = results[method]
            d = values[f"{key}{suffix}"]
            if f"{key}{suffix}_lo" in values:
                lo, hi = values[f"{key}{suffix}_lo"], values[f"{key}{suffix}_hi"]
                # a segment, not error bars: a basic interval need not contain its point (Fréchet's bias)
                ax.hlines([y], [lo], [hi], color="tab:blue", linewidth=1.5, gid=f"{method}|{key}")
                ax.plot([lo, hi], [y, y], "|", color="tab:blue", markersize=7)
            better = better_than_baseline(values, key, suffix)
            ax.plot([d], [y], "o", color="tab:blue", markerfacecolor="tab:blue" if better else "white", markersize=5)
        ax.axvline(0.0, color="0.3", linestyle="--", linewidth=0.8)
        order = {"max": "higher is better", "min": "lower is better", "half": "lower is better (above 0.5)"}.get(BETTER.get(key), "")
        ax.set_title(f"{titles.get(key, key)}\n{order}", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0][0].set_yticks(ys, others, fontsize=8)
    fig.suptitle(f"Row − {baseline}, 95 % paired interval (filled: excludes 0 on the better side)", fontsize=9)
    fig.tight_layout()
    return fig
