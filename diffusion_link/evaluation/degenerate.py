"""Results that are degenerate, said so: an encoder whose recall is not above chance, and a gap-table row
whose outputs collapse to (nearly) one point. (A captioner that ignores its input and a relative gain
over a baseline indistinguishable from zero are flagged where the captioning table is made:
:func:`diffusion_link.evaluation.captioning.diversity`, ``diffusion_link.report.tables``.)

* **Recall at chance.** The encoder's test R@1 (audio→text and text→audio) is *not above chance* when a
  one-sided binomial test cannot tell its hits from chance: with N test clips and chance level p
  (``chance_R@1`` = 1/N), P(X ≥ hits | X ~ Binomial(N, p)) ≥ ``RECALL_ALPHA`` (0.05). Above chance then
  takes 4 hits whatever N: R@1 ≥ 0.25 on 16 clips (chance 0.0625), ≥ 0.037 on 108, ≥ 0.004 on 1,000.
* **A collapsed row.** A row's (L2-normalised) outputs are collapsed when their mean pairwise cosine is
  at least ``COLLAPSE_COSINE`` (0.999; a real embedding set, even one modality's narrow cone, sits far
  below: the demo's text ~0.3-0.6) or their total variance (the trace of the covariance) is below
  ``COLLAPSE_VARIANCE_FRACTION`` (1 %) of the text embeddings' on the same clips (a spread of ~10 % of
  the text's in every direction): every metric that compares distributions is then meaningless, and a
  captioner fed that row gets one input.
"""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)

RECALL_ALPHA = 0.05
COLLAPSE_COSINE = 0.999
COLLAPSE_VARIANCE_FRACTION = 0.01


def recall_p_value(recall: float, chance: float, clips: int) -> float:
    """P(hits ≥ observed) for hits ~ Binomial(clips, chance): how likely chance alone does as well."""
    from scipy.stats import binom

    hits = round(recall * clips)
    return float(binom.sf(hits - 1, clips, chance))


def recall_flags(scores: dict[str, float], prefix: str = "test") -> list[str]:
    """A warning per retrieval direction whose R@1 is not above chance (``scores``: the encoder test's
    ``scores.json`` scores, ``<prefix>/a2t_R@1``, ``<prefix>/t2a_R@1``, ``<prefix>/chance_R@1``)."""
    chance = scores.get(f"{prefix}/chance_R@1")
    if not chance or chance <= 0:
        return []
    clips = round(1 / chance)
    flags = []
    for direction, label in (("a2t", "audio->text"), ("t2a", "text->audio")):
        r1 = scores.get(f"{prefix}/{direction}_R@1")
        if r1 is None:
            continue
        p = recall_p_value(r1, chance, clips)
        if p >= RECALL_ALPHA:
            flags.append(
                f"encoder {label} R@1 {r1:.3f} is not above chance ({chance:.3f} on {clips} clips; binomial p = {p:.2f} "
                f">= {RECALL_ALPHA}): the encoder has not learnt to pair audio with text, and every later number inherits that"
            )
    return flags


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def spread(x: np.ndarray) -> tuple[float, float]:
    """(mean cosine between distinct rows, total variance) of the L2-normalised rows of ``x``."""
    u = _unit(x)
    n = len(u)
    if n < 2:
        return 1.0, 0.0
    total = u.sum(0)
    mean_cosine = (float(total @ total) - n) / (n * (n - 1))
    variance = float(u.var(0, ddof=1).sum())
    return mean_cosine, variance


def collapse_flags(rows: dict[str, np.ndarray], text: np.ndarray) -> dict[str, dict[str, float]]:
    """Per row: ``mean_cosine``, ``variance_ratio`` (its total variance / the text's) and ``collapsed``
    (1.0 or 0.0); a collapsed row is logged as a warning."""
    _, text_variance = spread(text)
    out = {}
    for name, x in rows.items():
        cosine, variance = spread(x)
        ratio = variance / text_variance if text_variance > 0 else float("inf")
        collapsed = cosine >= COLLAPSE_COSINE or ratio < COLLAPSE_VARIANCE_FRACTION
        out[name] = {"mean_cosine": cosine, "variance_ratio": ratio, "collapsed": float(collapsed)}
        if collapsed:
            log.warning(collapse_message(name, out[name]))
    return out


def collapse_message(name: str, values: dict[str, float]) -> str:
    return (
        f"gap-table row '{name}' collapsed to (nearly) one point: mean pairwise cosine {values['mean_cosine']:.4f}, "
        f"total variance {values['variance_ratio']:.2%} of the text's (flagged at cosine >= {COLLAPSE_COSINE} or "
        f"< {COLLAPSE_VARIANCE_FRACTION:.0%}); its gap metrics compare one point with the text"
    )


def collapsed_rows(results: dict[str, dict[str, float]]) -> list[str]:
    """The warnings of a gap report's collapsed rows (its ``collapsed`` column; none where it has none)."""
    return [collapse_message(name, values) for name, values in results.items() if values.get("collapsed")]
