"""Two synthetic "modalities" with a known gap, written as a feature store.

Text  c = normalise(A z + 0.05 n)
Audio a = normalise(A z + offset + 0.05 n')       (z latent, A a random map, offset a fixed vector)

The offset shifts and squeezes the audio cloud on the sphere (a narrower cone, away from text), so
it is not undone by a translation alone; the pairs share z, so raw retrieval works.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from diffusion_link.data.store import rows_to_dataset, store_header
from diffusion_link.files import write_json


def make_pairs(n: int, dim: int = 32, latent: int = 6, offset: float = 3.0, seed: int = 0, refs: int = 1):
    g = np.random.default_rng(seed)
    basis = np.random.default_rng(1234).standard_normal((latent, dim))  # the same map and offset for every split
    shift = np.random.default_rng(4321).standard_normal(dim)
    shift *= offset / np.linalg.norm(shift)
    z = g.standard_normal((n, latent))
    clean = z @ basis / np.sqrt(latent)
    unit = lambda v: (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)  # noqa: E731
    text = unit(clean[:, None] + 0.05 * g.standard_normal((n, refs, dim)))
    audio = unit(clean + shift + 0.05 * g.standard_normal((n, dim)))
    return audio, text


def write_synthetic_store(out: Path, n_train: int = 3000, n_test: int = 400, dim: int = 32) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for split, n, seed, refs in (("train", n_train, 0, 1), ("val", n_test, 1, 5), ("test", n_test, 2, 5)):
        audio, text = make_pairs(n, dim, seed=seed, refs=refs)
        rows = {
            "clip_id": [f"{split}{i:05d}" for i in range(n)],
            "audio_embedding": list(audio),
            "captions": [[f"{split} {i} ref {k}" for k in range(refs)] for i in range(n)],
            "text_embeddings": list(text),
        }
        rows_to_dataset(rows, dim).save_to_disk(str(out / split))
    encoder = {"family": "synthetic", "weights": "none", "dim": dim}
    write_json(out / "store.json", {**store_header(dim, encoder, {"source": "synthetic-gap"}), "status": "complete"})
    return out
