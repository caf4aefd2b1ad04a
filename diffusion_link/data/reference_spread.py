"""How much a clip's references differ (issue 21): the within-clip share of the text-embedding variance and
the mean cosine between a clip's references.

    python -m diffusion_link.data.references --measure data/demo-varied [--split val test] [--tfidf]

``within_share`` = sum over clips of sum_i ||x_i - mean_clip||^2 / sum over texts of ||x_i - mean_all||^2 (the
share of the texts' variance that lies within clips; 0 when a clip's references are one point);
``mean_cosine`` = the mean over clips of the mean cosine over pairs of a clip's references. Embeddings: the
demo encoder's frozen text tower, all-MiniLM-L6-v2 (mean pooling over tokens, unit norm; located by
:func:`diffusion_link.assets.sentence_encoder_dir`, never downloaded), with ``--encoder EXPORT`` a trained
encoder's text embeddings (MiniLM and the trained projection), or with ``--tfidf`` bag-of-words TF-IDF
vectors (unit norm; a cheap proxy, no model).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

#: issue 21's aim for a demo whose text given the audio is a real distribution
WITHIN_SHARE_AIM, MEAN_COSINE_AIM = 0.20, 0.85


def spread(groups: list[list[str]], embed: Callable[[list[str]], np.ndarray]) -> dict[str, float]:
    """``within_share`` and ``mean_cosine`` (see the module) of clips' reference lists (each of two or more)."""
    if not groups or any(len(g) < 2 for g in groups):
        raise ValueError("spread needs clips with two or more references each")
    texts = [t for g in groups for t in g]
    x = np.asarray(embed(texts), dtype=np.float64)
    total = float(np.square(x - x.mean(0)).sum())
    within, cosines, start = 0.0, [], 0
    for g in groups:
        e = x[start : start + len(g)]
        start += len(g)
        within += float(np.square(e - e.mean(0)).sum())
        u = e / np.linalg.norm(e, axis=1, keepdims=True).clip(min=1e-12)
        c = u @ u.T
        cosines.append(float(c[np.triu_indices(len(g), 1)].mean()))
    return {"within_share": within / total if total > 0 else 0.0, "mean_cosine": float(np.mean(cosines)), "clips": len(groups), "texts": len(texts)}


def tfidf_embed(texts: list[str]) -> np.ndarray:
    """Unit-norm TF-IDF vectors of the texts (fitted on them), dense."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    return TfidfVectorizer().fit_transform(texts).toarray()


def minilm_embed(name: str | None = None, batch_size: int = 64) -> Callable[[list[str]], np.ndarray]:
    """all-MiniLM-L6-v2 (or ``name``: a local sentence-encoder folder) sentence embeddings: mean pooling over
    the tokens, unit norm, as the demo encoder's frozen text tower computes them."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from diffusion_link.assets import MINILM, sentence_encoder_dir

    folder = sentence_encoder_dir(name or MINILM)
    tokenizer, model = AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder).eval()

    @torch.no_grad()
    def embed(texts: list[str]) -> np.ndarray:
        out = []
        for i in range(0, len(texts), batch_size):
            tokens = tokenizer(texts[i : i + batch_size], padding=True, truncation=True, max_length=64, return_tensors="pt")
            hidden = model(**tokens).last_hidden_state
            mask = tokens["attention_mask"][..., None].float()
            out.append(torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1).clamp(min=1), dim=-1).numpy())
        return np.concatenate(out) if out else np.zeros((0, model.config.hidden_size))

    return embed


def encoder_embed(export: str) -> Callable[[list[str]], np.ndarray]:
    """A trained demo encoder's text embeddings (its export folder: the frozen MiniLM and its trained
    projection, the space the bridge and the captioner work in), unit norm."""
    import torch

    from diffusion_link.encoder import load_encoder

    encoder = load_encoder(export=export)

    @torch.no_grad()
    def embed(texts: list[str]) -> np.ndarray:
        return torch.nn.functional.normalize(encoder.encode_text(texts).float(), dim=-1).cpu().numpy()

    return embed


def references_of(root: str | Path, split: str) -> list[list[str]]:
    """Each clip's references in a demo (or any AudioCaps-layout) build's split."""
    from diffusion_link.data.audiocaps import AudioCapsCSV

    root = Path(root)
    if not (root / "csv" / f"{split}.csv").is_file():
        raise FileNotFoundError(f"{root / 'csv' / f'{split}.csv'} not found: pass the root of a built demo (e.g. data/demo, built by make demo)")
    return [r.captions for r in AudioCapsCSV(str(root / "csv"), str(root / "audio")).records(split)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m diffusion_link.data.references", description=__doc__.split("\n\n")[0])
    parser.add_argument("--measure", required=True, metavar="ROOT", help="a built demo (its csv/ folder)")
    parser.add_argument("--split", nargs="+", default=["val", "test"], help="splits to measure, each on its own (default: val test)")
    parser.add_argument("--tfidf", action="store_true", help="TF-IDF vectors instead of all-MiniLM-L6-v2 (no model)")
    parser.add_argument("--model", default=None, help="a local sentence-encoder folder instead of all-MiniLM-L6-v2")
    parser.add_argument("--encoder", default=None, metavar="EXPORT", help="a trained encoder's export folder: its text tower's embeddings")
    args = parser.parse_args(argv)
    embed = tfidf_embed if args.tfidf else encoder_embed(args.encoder) if args.encoder else minilm_embed(args.model)
    out = {split: spread(references_of(args.measure, split), embed) for split in args.split}
    for split, s in out.items():
        s["meets_aim"] = s["within_share"] >= WITHIN_SHARE_AIM and s["mean_cosine"] <= MEAN_COSINE_AIM
    print(json.dumps({"root": str(args.measure), "embedding": "tfidf" if args.tfidf else args.encoder or args.model or "all-MiniLM-L6-v2", **out}, indent=1))
    return 0
