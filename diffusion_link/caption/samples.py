"""Several captions per clip (``caption_samples: n``): each test row captions n bridged samples of every
clip, and the row's record says how different a clip's captions are beside how different its references
are (:mod:`diffusion_link.evaluation.caption_diversity`; docs/method.md, "Caption diversity").

Sample 1 is the row's own caption, the one the captioning table scores (made on the row's random stream,
as with n = 1). Samples 2..n of a stochastic bridge (:meth:`~diffusion_link.caption.inputs.Bridges.stochastic`)
draw their noise from a generator seeded by the run's seed, the clip id and k
(:func:`~diffusion_link.caption.inputs.sample_seed`), so two runs give the same captions. A deterministic
input (raw audio, the mean shift, projection decoding, a regressor, DDIM from the audio, the text ceiling)
is the same n times and decoding is deterministic (beam search / greedy), so its n captions are the first
one repeated, not recomputed; the record says ``deterministic: true`` and the measures show zero diversity.
"""

from __future__ import annotations

import csv
from pathlib import Path

import torch

from diffusion_link.caption.inputs import Bridges, sample_seed


def sampled_captions(
    generate, bridges: Bridges, audio: torch.Tensor, clips: list[str], setting: str | None, first: list[str], n: int, base_seed: int
) -> tuple[list[list[str]], bool]:
    """Each clip's n captions, ``first`` (the row's own) first, and whether the row is deterministic.
    ``generate(inputs)`` captions a batch of embeddings; ``setting`` None with ``audio`` None: the text ceiling."""
    if audio is None or not bridges.stochastic(setting):
        return [[c] * n for c in first], True
    extra = [generate(bridges.seeded(audio, setting, [sample_seed(base_seed, c, k) for c in clips])) for k in range(1, n)]
    return [[c, *(e[i] for e in extra)] for i, c in enumerate(first)], False


class SampleCaptions:
    """The n captions per clip of every test row of one test run (``caption_samples: n``, n > 1)."""

    def __init__(self, n: int, keys, base_seed: int):
        self.n, self.base_seed = n, base_seed
        self.captions: dict = {key: [] for key in keys}  # key -> [(clip, [n captions])]
        self.deterministic: dict = {}

    def add(self, key, generate, bridges: Bridges, audio: torch.Tensor | None, clips: list[str], setting: str | None, first: list[str]) -> None:
        captions, self.deterministic[key] = sampled_captions(generate, bridges, audio, clips, setting, first, self.n, self.base_seed)
        self.captions[key] += list(zip(clips, captions))

    def record(self, key, samples: list, clips: list[str], scored_against: list[list[str]], first_cider: float | None, cache_path, out: Path) -> dict:
        """Row ``key``'s record (:func:`sample_record`), its (gathered) ``samples`` in the order of ``clips``; writes samples.csv."""
        order = {clip: i for i, clip in enumerate(clips)}
        samples = sorted(samples, key=lambda s: order[s[0]])
        write_samples(samples, out)
        return sample_record(samples, scored_against, first_cider, self.deterministic.get(key, True), cache_path)


def sample_record(
    samples: list[tuple[str, list[str]]], scored_against: list[list[str]], first_cider: float | None, deterministic: bool, cache_path: str | None = None
) -> dict:
    """A row's ``caption_samples`` record: n, whether deterministic, CIDEr-D of sample 1 (the table's), the mean
    and best over the n samples (against ``scored_against``, the references the row is scored with), and the
    diversity of each clip's captions (:func:`~diffusion_link.evaluation.caption_diversity.set_diversity`)."""
    from diffusion_link.evaluation.caption_diversity import sample_cider, set_diversity

    groups = [captions for _, captions in samples]
    record = {"n": len(groups[0]), "deterministic": deterministic, "cider_d_first": first_cider}
    if first_cider is not None and deterministic:  # n copies of the table's captions: its CIDEr-D, not recomputed
        record.update(cider_d_mean=first_cider, cider_d_max=first_cider)
    elif first_cider is not None:  # CIDEr-D needs a corpus of two clips or more, as the table's
        record.update(sample_cider(groups, scored_against, cache_path))
    record["diversity"] = set_diversity(groups)
    return record


def reference_record(references: list[list[str]], n: int) -> dict:
    """The reference row: the same diversity over each clip's first n references."""
    from diffusion_link.evaluation.caption_diversity import set_diversity

    return {"n": min(n, max(len(r) for r in references)), "deterministic": None, "diversity": set_diversity([r[:n] for r in references])}


def write_samples(samples: list[tuple[str, list[str]]], out: Path) -> Path:
    """``samples.csv``: clip_id, sample (1..n), caption."""
    path = out / "samples.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["clip_id", "sample", "caption"])
        for clip, captions in samples:
            writer.writerows([clip, k, c] for k, c in enumerate(captions, 1))
    return path


def write_table(records: dict[str, dict], references: list[list[str]], n: int, out: Path) -> tuple[Path, Path]:
    """The captioner's ``caption_diversity.{md,csv}`` in ``out``: its rows' records, then the references' row."""
    from diffusion_link.evaluation.caption_diversity import REFERENCES, write_diversity

    table = {**records, f"{REFERENCES} (first {n})": reference_record(references, n)}
    csv_path, md_path = write_diversity(table, out)
    print(f"\nCaption diversity ({n} samples per clip):\n{md_path.read_text()}  -> {csv_path}, {md_path}", flush=True)
    return csv_path, md_path
