"""Caption metrics with aac-metrics, offline, scored once on the whole corpus.

aac-metrics matches the DCASE caption-evaluation tools. Its Java files are normally downloaded; here
they come from the ``pycocoevalcap`` pip package, linked into an aac-metrics cache folder
(``$DIFFUSION_LINK_HOME/aac-metrics``, or ``AAC_METRICS_CACHE_PATH`` / the ``cache_path`` option).
aac-metrics refuses Java newer than 13; Java 17 runs the PTB tokenizer and METEOR correctly, so the
bound is raised (``allow_java``).

Always: BLEU-1..4, METEOR, ROUGE-L, CIDEr-D. When their files are present: SPICE and SPIDEr (the
two Stanford CoreNLP 3.6.0 jars in ``<cache>/aac-metrics/spice/lib``), FENSE (its error-checker
checkpoint in ``$FENSE_DATA`` and the sentence-BERT model in the Hugging Face cache). Missing ones
are skipped with a warning that says what to get. CIDEr-D's IDF is computed over the corpus: call
:func:`score_captions` once with every candidate, never per batch.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np

from diffusion_link.assets import MissingAssetError, hf_cached_snapshot, home, package_dir

log = logging.getLogger(__name__)

ALWAYS = ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "cider_d")
CORENLP_JARS = ("stanford-corenlp-3.6.0.jar", "stanford-corenlp-3.6.0-models.jar")
FENSE_SBERT = "sentence-transformers/paraphrase-TinyBERT-L6-v2"
FENSE_CHECKPOINT = "echecker_clotho_audiocaps_base.ckpt"


def normalise(caption: str) -> str:
    """Whitespace-normalised, one line (the PTB tokenizer rejects newlines)."""
    return " ".join(str(caption).split())


def allow_java(max_major: int = 21) -> None:
    """Let aac-metrics run Java up to ``max_major`` (its own bound is 13)."""
    from aac_metrics.utils import checks

    checks.MAX_JAVA_MAJOR_VERSION = max(checks.MAX_JAVA_MAJOR_VERSION, max_major)


def prepare_cache(cache_path: str | Path | None = None) -> Path:
    """An aac-metrics cache folder filled from pycocoevalcap's files (links; nothing downloaded)."""
    cache = Path(cache_path or os.environ.get("AAC_METRICS_CACHE_PATH") or home() / "aac-metrics")
    root = cache / "aac-metrics"
    source = package_dir("pycocoevalcap")
    wanted = {
        root / "stanford_nlp" / "stanford-corenlp-3.4.1.jar": "tokenizer/stanford-corenlp-3.4.1.jar",
        root / "meteor" / "meteor-1.5.jar": "meteor/meteor-1.5.jar",
        root / "meteor" / "data" / "paraphrase-en.gz": "meteor/data/paraphrase-en.gz",
        root / "spice" / "spice-1.0.jar": "spice/spice-1.0.jar",
    }
    if source is not None:
        for target, relative in wanted.items():
            if not target.exists() and (source / relative).exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                target.symlink_to(source / relative)
        lib = root / "spice" / "lib"
        lib.mkdir(parents=True, exist_ok=True)
        for jar in (source / "spice" / "lib").glob("*.jar"):
            if not (lib / jar.name).exists():
                (lib / jar.name).symlink_to(jar)
    for target in list(wanted)[:3]:
        if not target.exists():
            raise MissingAssetError(
                f"{target.name} for the caption metrics is missing from {cache}: install it with "
                "`pip install --no-deps pycocoevalcap==1.2` (or set AAC_METRICS_CACHE_PATH to a filled aac-metrics cache)"
            )
    return cache


def available_metrics(cache: Path, corenlp_dir: str | Path | None = None, fense: bool = True) -> tuple[list[str], list[str]]:
    """(metrics to compute, warnings about those skipped and what they need)."""
    metrics, skipped = list(ALWAYS), []
    lib = cache / "aac-metrics" / "spice" / "lib"
    corenlp_dir = corenlp_dir or os.environ.get("DIFFUSION_LINK_CORENLP_DIR")
    if corenlp_dir:
        for jar in CORENLP_JARS:
            if (Path(corenlp_dir) / jar).exists() and not (lib / jar).exists():
                (lib / jar).symlink_to(Path(corenlp_dir).resolve() / jar)
    missing = [jar for jar in CORENLP_JARS if not (lib / jar).exists()]
    if missing:
        skipped.append(
            f"SPICE and SPIDEr skipped: {', '.join(missing)} not in {lib}. Get Stanford CoreNLP 3.6.0 "
            "(stanford-corenlp-full-2015-12-09) and pass corenlp_dir / set DIFFUSION_LINK_CORENLP_DIR to the folder with both jars."
        )
    elif shutil.which("java"):
        metrics += ["spice", "spider"]
    fense_ckpt = Path(os.environ.get("FENSE_DATA", Path(_torch_hub()) / "fense_data")) / FENSE_CHECKPOINT
    if fense and (fense_ckpt.exists() and hf_cached_snapshot(FENSE_SBERT) is not None):
        metrics.append("fense")
    elif fense:
        skipped.append(
            f"FENSE skipped: needs {fense_ckpt} (github.com/blmoistawinde/fense releases) and {FENSE_SBERT} in the "
            "Hugging Face cache (`huggingface-cli download " + FENSE_SBERT + "`)."
        )
    return metrics, skipped


def _torch_hub() -> str:
    import torch

    return torch.hub.get_dir()


#: the metrics whose corpus score is the mean of per-clip scores (so a bootstrap over clips is exact)
MEANS_OVER_CLIPS = ("rouge_l", "cider_d", "spice", "spider", "fense")


def score_captions(
    candidates: list[str],
    mult_references: list[list[str]],
    cache_path: str | Path | None = None,
    corenlp_dir: str | Path | None = None,
    java_path: str | None = None,
    fense: bool = True,
    bootstrap: int = 0,
    seed: int = 0,
) -> tuple[dict[str, float], list[str], dict[str, list[float]]]:
    """Corpus-level scores of every candidate against its references, the warnings of skipped metrics,
    and the per-clip scores of the metrics that are means over clips (``MEANS_OVER_CLIPS``), in input order.

    Empty candidates are scored as empty (they count against the system); references must not be empty.
    With ``bootstrap`` > 0, each metric whose corpus score is the mean of its per-clip scores (CIDEr-D,
    ROUGE-L, SPICE, SPIDEr, FENSE) also gets ``<metric>_lo`` / ``<metric>_hi``: a 95 % percentile
    bootstrap interval over clips. BLEU and METEOR are corpus statistics, not means over clips; an
    interval would re-run their scorers on every resample, so they get none.
    """
    from aac_metrics import evaluate

    if len(candidates) != len(mult_references):
        raise ValueError(f"{len(candidates)} candidates but {len(mult_references)} reference lists")
    if not candidates:
        raise ValueError("no candidates to score")
    refs = [[normalise(r) for r in refs if normalise(r)] for refs in mult_references]
    if any(not r for r in refs):
        raise ValueError("every candidate needs at least one non-empty reference")
    java = java_path or shutil.which("java")
    if java is None:
        raise MissingAssetError("Java is needed for the PTB tokenizer and METEOR: apt-get install openjdk-17-jre-headless")
    allow_java()
    cache = prepare_cache(cache_path)
    metrics, skipped = available_metrics(cache, corenlp_dir, fense)
    if len(candidates) < 2:  # CIDEr-D's IDF over a corpus of one document is undefined
        metrics = [m for m in metrics if m not in ("cider_d", "spider")]
        skipped.append("CIDEr-D (and SPIDEr) skipped: they need at least 2 candidates (IDF over the corpus).")
    for warning in skipped:
        log.warning(warning)
    # the PTB tokenizer drops a sentence that is empty after tokenization; a lone "." stands for "nothing said"
    cands = [normalise(c) or "." for c in candidates]
    corpus, sents = evaluate(cands, refs, metrics=metrics, cache_path=str(cache), java_path=java, device="cpu", verbose=0)
    scores = {k: float(v) for k, v in corpus.items()}
    per_clip = {
        key: sents[key].double().tolist()
        for key in MEANS_OVER_CLIPS
        if key in scores and key in sents and abs(float(sents[key].double().mean()) - scores[key]) <= 1e-6 * max(1.0, abs(scores[key]))
    }
    if bootstrap:
        from diffusion_link.evaluation.gap import mean_interval

        for key, values in per_clip.items():
            scores[f"{key}_lo"], scores[f"{key}_hi"] = mean_interval(np.asarray(values), bootstrap, seed)
    return scores, skipped, per_clip
