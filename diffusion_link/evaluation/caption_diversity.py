"""Caption diversity: how different the n captions of one clip are (one per bridged sample of the clip),
beside how different the clip's own first n references are, and CIDEr-D over the n samples
(docs/method.md, "Caption diversity").

For clip i with n captions c_1..c_n (tokens: lower-case words, :func:`tokens`):

* ``distinct_1`` / ``distinct_2``: distinct unigrams (bigrams) of the clip's n captions over all their
  unigrams (bigrams); n identical captions of distinct words give 1/n, n captions with no word in common 1;
* ``self_bleu``: each caption's sentence BLEU-4 (aac-metrics' BLEU, pycocoevalcap's formula; BLEU-k for a
  caption of k < 4 words) against the clip's other n − 1 captions, averaged over the n: 1 for identical
  captions, about 0 for captions that share no n-gram of that order;
* ``distinct_captions``: how many different captions the clip got (1 … n).

Each is averaged over the clips. Over the whole set: ``vocab``, aac-metrics' ``vocab`` (the corpus
vocabulary size) of every caption of every clip, and ``vocab_first`` of the first caption of each clip.
The reference row is the same measures over each clip's first n references.

CIDEr-D over the samples (:func:`sample_cider`): the clips' k-th captions scored as a corpus against the
references, as the captioning table scores its one caption per clip (PTB-tokenized, IDF over the
references), through aac-metrics' multiple-candidates wrapper: ``cider_d_mean`` (the mean over the n
samples) and ``cider_d_max`` (each clip's best sample, an oracle that chooses after seeing the references).
"""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path

KEYS = ("distinct_1", "distinct_2", "self_bleu", "distinct_captions")
CIDER_KEYS = ("cider_d_first", "cider_d_mean", "cider_d_max")
_WORD = re.compile(r"[a-z0-9']+")
REFERENCES = "references"  # the reference row's name in the table


def tokens(caption: str) -> list[str]:
    """Lower-case words (punctuation dropped): the same split for captions and references."""
    return _WORD.findall(str(caption).lower())


def distinct_n(captions: list[str], n: int) -> float:
    """Distinct n-grams of the captions over all their n-grams (NaN when they have none)."""
    grams = [tuple(t[i : i + n]) for c in captions for t in [tokens(c)] for i in range(len(t) - n + 1)]
    return len(set(grams)) / len(grams) if grams else math.nan


def self_bleu(captions: list[str]) -> float:
    """Mean over the captions of each one's sentence BLEU against the others (NaN for fewer than two): BLEU-4,
    or BLEU-k for a caption of k < 4 words (it has no 4-gram, so BLEU-4 would call it 0 even against copies of
    itself: "A frog croaks" five times would look as diverse as five captions with no word in common)."""
    from aac_metrics.functional.bleu import bleu

    if len(captions) < 2:
        return math.nan
    joined = [" ".join(tokens(c)) for c in captions]
    scores = []
    for i, caption in enumerate(joined):
        order = min(4, len(caption.split()))
        if order == 0:  # no word: no BLEU
            continue
        others = [o for j, o in enumerate(joined) if j != i]
        _, sents = bleu([caption], [others], return_all_scores=True, n=order)
        scores.append(float(sents[f"bleu_{order}"][0]))
    return sum(scores) / len(scores) if scores else math.nan


def clip_diversity(captions: list[str]) -> dict[str, float]:
    """:data:`KEYS` for one clip's captions."""
    return {
        "distinct_1": distinct_n(captions, 1),
        "distinct_2": distinct_n(captions, 2),
        "self_bleu": self_bleu(captions),
        "distinct_captions": float(len({" ".join(tokens(c)) for c in captions})),
    }


def set_diversity(groups: list[list[str]]) -> dict[str, float]:
    """The means over clips of :func:`clip_diversity` (NaN values left out), the vocabularies and counts;
    ``groups`` holds each clip's captions (or references), the first one first."""
    from aac_metrics.functional.vocab import vocab

    if not groups or any(not g for g in groups):
        raise ValueError("every clip needs at least one caption")
    per_clip = [clip_diversity(g) for g in groups]
    out = {}
    for key in KEYS:
        values = [v[key] for v in per_clip if not math.isnan(v[key])]
        out[key] = sum(values) / len(values) if values else math.nan
    words = [" ".join(tokens(c)) for g in groups for c in g]
    out["vocab"] = float(vocab(words, None, return_all_scores=True)[0]["vocab.cands"])
    out["vocab_first"] = float(vocab([" ".join(tokens(g[0])) for g in groups], None, return_all_scores=True)[0]["vocab.cands"])
    out["clips"], out["samples"] = len(groups), max(len(g) for g in groups)
    return out


def sample_cider(mult_candidates: list[list[str]], mult_references: list[list[str]], cache_path: str | Path | None = None) -> dict[str, float]:
    """CIDEr-D of the clips' k-th captions as a corpus, for each k: the mean over k and each clip's best.
    Tokenized with the PTB tokenizer (Java) as :func:`~diffusion_link.evaluation.captioning.score_captions` does."""
    import shutil

    from aac_metrics.functional.cider_d import cider_d
    from aac_metrics.functional.mult_cands import mult_cands_metric
    from aac_metrics.utils.tokenization import preprocess_mono_sents, preprocess_mult_sents

    from diffusion_link.assets import MissingAssetError
    from diffusion_link.evaluation.captioning import allow_java, normalise, prepare_cache

    java = shutil.which("java")
    if java is None:
        raise MissingAssetError("Java is needed for the PTB tokenizer: apt-get install openjdk-17-jre-headless")
    allow_java()
    cache = prepare_cache(cache_path)
    n = len(mult_candidates[0])
    tokenize = dict(cache_path=str(cache), java_path=java, verbose=0)
    flat = preprocess_mono_sents([normalise(c) or "." for cands in mult_candidates for c in cands], **tokenize)
    cands = [flat[i * n : (i + 1) * n] for i in range(len(mult_candidates))]
    refs = preprocess_mult_sents([[normalise(r) for r in refs if normalise(r)] for refs in mult_references], **tokenize)
    out = {}
    for selection in ("mean", "max"):
        corpus, _ = mult_cands_metric(cider_d, "cider_d", cands, refs, selection=selection)
        out[f"cider_d_{selection}"] = float(corpus[f"cider_d_{selection}"])
    return out


def _cell(value: float, digits: int = 3) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def diversity_table(rows: dict[str, dict]) -> str:
    """Markdown: one row per captioning row (and the references), name -> its ``caption_samples`` record."""
    header = (
        "| row | n | deterministic | CIDEr-D (sample 1) | CIDEr-D (mean of n) | CIDEr-D (best of n) "
        "| distinct-1 | distinct-2 | self-BLEU | distinct captions | Vocab (all) | Vocab (sample 1) |"
    )
    lines = [header, "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in rows.items():
        d = r["diversity"]
        deterministic = "—" if r.get("deterministic") is None else ("yes" if r["deterministic"] else "no")
        ciders = " | ".join(_cell(r.get(k)) for k in CIDER_KEYS)
        lines.append(
            f"| {name} | {r['n']} | {deterministic} | {ciders} | {_cell(d['distinct_1'])} | {_cell(d['distinct_2'])} | {_cell(d['self_bleu'])} "
            f"| {_cell(d['distinct_captions'], 2)} | {d['vocab']:.0f} | {d['vocab_first']:.0f} |"
        )
    return "\n".join(lines)


NOTE = (
    "n captions per clip, one per bridged sample (sample 1 is the captioning table's caption); a deterministic row gives the "
    "same input n times, hence n identical captions (zero diversity: distinct captions 1, self-BLEU 1). distinct-k: distinct "
    "k-grams / all k-grams of a clip's captions; self-BLEU: each caption's BLEU-4 (BLEU-k for k < 4 words) against the clip's other captions; both "
    "averaged over clips. Vocab: aac-metrics' corpus vocabulary of every caption (all) or of the first per clip. The "
    f"'{REFERENCES}' row: the same measures over each clip's first n references. docs/method.md, 'Caption diversity'."
)


def write_diversity(rows: dict[str, dict], out_dir: str | Path) -> tuple[Path, Path]:
    """``caption_diversity.csv`` and ``.md`` in ``out_dir`` (rows as in :func:`diversity_table`)."""
    from diffusion_link.files import write_atomic

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    columns = [*KEYS, "vocab", "vocab_first"]
    with open(out / "caption_diversity.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["row", "n", "deterministic", *CIDER_KEYS, *columns])
        for name, r in rows.items():
            cider = [f"{r[k]:.6g}" if r.get(k) is not None else "" for k in CIDER_KEYS]
            deterministic = "" if r.get("deterministic") is None else r["deterministic"]
            writer.writerow([name, r["n"], deterministic, *cider, *(f"{r['diversity'][k]:.6g}" for k in columns)])
    md = write_atomic(out / "caption_diversity.md", diversity_table(rows) + "\n\n" + NOTE + "\n")
    return out / "caption_diversity.csv", md
