"""A captioning test row's scores: aac-metrics over the whole split at once (the ceiling row
leave-one-out: it saw reference 1, so it is scored against the others), a warning when the row ignores
its input, and ``predictions.csv``, one line per clip with its per-clip scores (the report's filters)."""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)
#: what a captioning report records of how its captioner was trained (``captioner_training``)
TRAINING_RECORD = ("mode", "split", "store", "steps", "precision", "noise_std", "train_through", "bridge_weights")


@dataclass
class MetricOptions:
    """Args:
    cache_path: aac-metrics cache folder (default ``$AAC_METRICS_CACHE_PATH`` or ``$DIFFUSION_LINK_HOME/aac-metrics``).
    corenlp_dir: folder with the two Stanford CoreNLP 3.6.0 jars SPICE needs (or ``$DIFFUSION_LINK_CORENLP_DIR``).
    fense: compute FENSE when its files are present.
    bootstrap: resamples of clips for the 95 % intervals of every metric (0: none).
    """

    cache_path: str | None = None
    corenlp_dir: str | None = None
    fense: bool = True
    bootstrap: int = 1000


def score_row(rows: list[tuple[str, str, list[str]]], name: str, ceiling: bool, out: Path, m: MetricOptions) -> tuple[dict, list, dict, list]:
    """Scores a row's ``(clip_id, caption, references)`` and writes ``out/predictions.csv``.

    Returns the scores (with their intervals), the metrics skipped (files missing), the captions'
    diversity and the references the row was scored against.
    """
    from diffusion_link.evaluation.captioning import diversity, leave_one_out, score_captions

    out.mkdir(parents=True, exist_ok=True)
    candidates, references = [r[1] for r in rows], [r[2] for r in rows]
    scored = leave_one_out(references) if ceiling else references
    scores, skipped, per_clip = score_captions(candidates, scored, m.cache_path, m.corenlp_dir, fense=m.fense, bootstrap=m.bootstrap)
    if (spread := diversity(candidates))["ignores_input"]:
        log.warning(f"{name} ignores its input: {spread['distinct_captions']} distinct caption(s) for {spread['clips']} clips")
    with open(out / "predictions.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["clip_id", "candidate", "references", *per_clip])
        for i, (clip, cand, refs) in enumerate(rows):
            writer.writerow([clip, cand, json.dumps(refs, ensure_ascii=False), *(f"{v[i]:.6g}" for v in per_clip.values())])
    return scores, skipped, spread, scored
