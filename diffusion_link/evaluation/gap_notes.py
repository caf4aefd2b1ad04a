"""The legend notes under the gap table (``gap_report.md``): the kernel, the intervals, the protocol."""

from __future__ import annotations


def kernel_note(results: dict, source: str) -> str:
    sigma = next(iter(results.values()))["mmd_sigma"]
    return f"MMD²: one RBF kernel for every row, σ = {sigma:.4f} (mmd_sigma; the median heuristic on {source})."


def interval_note(raw: str, bootstrap: int) -> str:
    if not bootstrap:
        return "No intervals (bootstrap: 0)."
    return (
        f"[lo, hi] = 95 % basic bootstrap interval over clips ({bootstrap} resamples of the clips, the same for every "
        "row, every metric recomputed on each; the probe's held-out predictions and R@k's gallery stay fixed). The basic "
        "interval corrects for a metric's small-sample bias; Fréchet (biased upward) is shown by its bias-corrected value "
        "2θ̂ − mean(θ*), which lies inside that interval (the plug-in value is 'frechet' in gap_report.csv, 'frechet_bc' the "
        "shown one), and so is its paired difference: the difference of the two shown values. Every row is evaluated on the same clips, in the same "
        f"order; the paired differences from {raw} use the same resamples for both rows. Bold: the row's paired interval "
        "of its difference from raw audio excludes 0 on the better side (probe: lower)."
    )


def protocol_note(train_split: str) -> str:
    return (
        f"Mean shift and projection decoding take their statistics from the '{train_split}' split; the diffusion "
        "bridges were trained on the splits their exports record (Diffusion-Link and its ablations on paired "
        "audio-text, Diffusion Bridge on text only). All metrics are computed in float64 from fp32 embeddings."
    )


__all__ = ["interval_note", "kernel_note", "protocol_note"]
