"""The feature store: the contract between stages, and the one place that knows its format.

A store is a directory (documented in ``docs/feature-store.md``)::

    store.json            format version, dim, encoder description, data description, checksum
    failures.csv          clip_id, split, path, reason (clips that could not be encoded)
    <split>/              datasets.Dataset.save_to_disk, one row per clip:
                            clip_id          string
                            audio_embedding  float32[dim]
                            captions         list[string]
                            text_embeddings  list[float32[dim]]  (one per caption)

Splits are read memory-mapped (Arrow), never loaded whole.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

FORMAT_VERSION = 1
COLUMNS = ("clip_id", "audio_embedding", "captions", "text_embeddings")


class StoreError(ValueError):
    """A feature store that is missing, incomplete or not in the documented format."""


def checksum(description: dict) -> str:
    """Short checksum of everything that changes a store's content (canonical JSON, sha256)."""
    canonical = json.dumps(description, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def features(dim: int):
    """The Arrow schema of one split."""
    from datasets import Features, Sequence, Value

    vector = Sequence(Value("float32"), length=dim)
    return Features(
        {
            "clip_id": Value("string"),
            "audio_embedding": vector,
            "captions": Sequence(Value("string")),
            "text_embeddings": Sequence(vector),
        }
    )


def rows_to_dataset(rows: dict[str, list], dim: int):
    """A ``datasets.Dataset`` in store format from column lists (embeddings as arrays or lists)."""
    from datasets import Dataset

    columns = {
        "clip_id": [str(c) for c in rows["clip_id"]],
        "audio_embedding": [np.asarray(a, dtype=np.float32) for a in rows["audio_embedding"]],
        "captions": [list(c) for c in rows["captions"]],
        "text_embeddings": [np.asarray(t, dtype=np.float32).reshape(-1, dim) for t in rows["text_embeddings"]],
    }
    return Dataset.from_dict(columns, features=features(dim))


def write_split(folder: Path, batches, dim: int) -> int:
    """Write one split from an iterable of ``pyarrow.RecordBatch``es in store schema, streaming (the
    split is never held whole in memory): the batches go to one Arrow file, which ``datasets`` maps
    (``Dataset.from_file``) and writes out in its own layout (``save_to_disk``). Returns the number of rows."""
    import pyarrow as pa
    from datasets import Dataset

    folder = Path(folder)
    scratch = folder.with_name(f".{folder.name}.stream.arrow")
    try:
        with pa.OSFile(str(scratch), "wb") as sink, pa.ipc.new_stream(sink, features(dim).arrow_schema) as writer:
            for batch in batches:
                writer.write_batch(batch)
        dataset = Dataset.from_file(str(scratch))
        dataset.save_to_disk(str(folder))
        rows = len(dataset)
        del dataset
    finally:
        scratch.unlink(missing_ok=True)
    return rows


def package_version() -> str:
    from diffusion_link import __version__

    return __version__


#: Encoder description keys that say where its files lie, not what they hold (its ``weights`` checksum does):
#: left out of a store's checksum, so a run folder copied or moved elsewhere reuses its stores.
ENCODER_LOCATION = ("export", "checkpoint_path")


def store_header(dim: int, encoder: dict, data: dict, extra: dict | None = None) -> dict[str, Any]:
    """The content of ``store.json`` (``status`` and counts are added by the writer). Its checksum covers
    everything but the encoder's file locations (:data:`ENCODER_LOCATION`)."""
    identity = {"format_version": FORMAT_VERSION, "dim": dim, "encoder": encoder, "data": data, **(extra or {})}
    content = {**identity, "encoder": {k: v for k, v in encoder.items() if k not in ENCODER_LOCATION}}
    return {**identity, "checksum": checksum(content), "package_version": package_version()}


@dataclass
class FeatureStore:
    """Read access to a store directory. Splits are memory-mapped ``datasets.Dataset`` objects.

    Accepts any directory in the documented format, whoever wrote it.
    """

    path: Path

    def __post_init__(self):
        self.path = Path(self.path).resolve()
        meta = self.path / "store.json"
        if not meta.is_file():
            raise StoreError(
                f"{self.path} is not a feature store: store.json is missing. Build one with "
                "`diffusion-link predict --config configs/cache/demo.yaml` (see docs/feature-store.md)."
            )
        self.meta = json.loads(meta.read_text())
        version = self.meta.get("format_version")
        if version != FORMAT_VERSION:
            raise StoreError(f"{meta}: format_version {version!r}; this package reads version {FORMAT_VERSION}")
        if self.meta.get("status") == "failed":
            raise StoreError(f"{self.path} is a failed store, not for use: {self.meta.get('reason', '?')}. Fix the data and run the cache command again.")
        if self.meta.get("status", "complete") != "complete":
            raise StoreError(
                f"{self.path} is incomplete (status {self.meta.get('status')!r}): the run that writes it was "
                "interrupted. Run the same cache command again; finished shards are kept."
            )
        if not isinstance(self.meta.get("dim"), int) or self.meta["dim"] <= 0:
            raise StoreError(f"{meta}: 'dim' must be a positive integer, got {self.meta.get('dim')!r}")
        self._splits: dict = {}

    @property
    def dim(self) -> int:
        return int(self.meta["dim"])

    @property
    def encoder(self) -> dict:
        return self.meta.get("encoder", {})

    @property
    def splits(self) -> list[str]:
        return sorted(p.name for p in self.path.iterdir() if (p / "dataset_info.json").is_file() or (p / "state.json").is_file())

    def split(self, name: str):
        """The split as a memory-mapped ``datasets.Dataset`` (numpy format), schema-checked."""
        if name not in self._splits:
            from datasets import load_from_disk

            folder = self.path / name
            if not folder.is_dir():
                raise StoreError(f"{self.path} has no split '{name}'; it has {self.splits}")
            try:
                ds = load_from_disk(str(folder))
            except IndexError:  # datasets cannot reload a saved dataset of zero rows: an empty split
                ds = rows_to_dataset({c: [] for c in COLUMNS}, self.dim)
            missing = set(COLUMNS) - set(ds.column_names)
            if missing:
                raise StoreError(f"{folder}: missing columns {sorted(missing)} (has {ds.column_names})")
            if len(ds):
                first = ds.with_format("numpy")[0]
                shape_a = np.asarray(first["audio_embedding"]).shape
                shape_t = np.asarray(first["text_embeddings"]).shape
                if shape_a != (self.dim,) or shape_t[-1:] != (self.dim,):
                    raise StoreError(f"{folder}: embeddings have shape {shape_a} / {shape_t}, but store.json says dim={self.dim}")
            self._splits[name] = ds.with_format("numpy")
        return self._splits[name]

    def iter_batches(self, name: str, rows: int = 8192):
        """The split as ``pyarrow.RecordBatch``es of at most ``rows`` rows (memory-mapped reads)."""
        yield from self.split(name).data.table.to_batches(max_chunksize=rows)

    def iter_arrays(self, name: str, rows: int = 8192):
        """The split as ``(clip_ids, audio (N, D), texts (M, D), owner (M,))`` per batch of at most ``rows``
        clips: ``owner[j]`` is the batch row whose caption ``texts[j]`` is (no Python rows are built)."""
        for batch in self.iter_batches(name, rows):
            texts = batch.column("text_embeddings")
            owner = np.repeat(np.arange(batch.num_rows), np.diff(texts.offsets.to_numpy()))
            yield batch.column("clip_id").to_pylist(), _matrix(batch.column("audio_embedding"), self.dim), _matrix(texts.flatten(), self.dim), owner

    def means(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean of the L2-normalised audio embeddings and of every caption's text embedding."""
        import torch

        sums, counts = [np.zeros(self.dim), np.zeros(self.dim)], [0, 0]
        for batch in self.iter_batches(name):
            audio = _matrix(batch.column("audio_embedding"), self.dim)
            text = _matrix(batch.column("text_embeddings").flatten(), self.dim)
            for i, m in enumerate((audio, text)):
                m = m / np.linalg.norm(m, axis=1, keepdims=True).clip(1e-12)
                sums[i] += m.sum(0)
                counts[i] += len(m)
        if not all(counts):
            raise StoreError(f"split '{name}' of {self.path} is empty: cannot compute its means")
        return tuple(torch.from_numpy(s / n).float() for s, n in zip(sums, counts))

    def text_matrix(self, name: str, limit: int | None = None, seed: int = 0) -> np.ndarray:
        """Every caption's text embedding of a split as one (M, D) array (or a seeded sample of ``limit``)."""
        parts = [_matrix(b.column("text_embeddings").flatten(), self.dim) for b in self.iter_batches(name)]
        texts = np.concatenate(parts) if parts else np.zeros((0, self.dim), np.float32)
        if limit is not None and len(texts) > limit:
            texts = texts[np.sort(np.random.default_rng(seed).choice(len(texts), limit, replace=False))]
        return texts

    def non_finite(self, name: str) -> list[str]:
        """Clip ids whose audio or text embeddings contain NaN or infinity."""
        bad = []
        for ids, audio, flat, owner in self.iter_arrays(name):
            rows = set(np.flatnonzero(~np.isfinite(audio).all(1))) | set(owner[~np.isfinite(flat).all(1)])
            bad += [ids[i] for i in sorted(rows)]
        return bad

    def caption_counts(self, name: str) -> np.ndarray:
        """Captions per clip, read from Arrow offsets (no row is materialised)."""
        import pyarrow.compute as pc

        column = self.split(name).data.column("text_embeddings")
        return np.concatenate([pc.list_value_length(chunk).to_numpy(zero_copy_only=False) for chunk in column.chunks] or [np.zeros(0)]).astype(np.int64)


# Parts of an encoder description that must match for embeddings to be interchangeable.
ENCODER_IDENTITY = ("family", "amodel", "tmodel", "weights", "dim", "sample_rate", "window_samples", "crop", "pad", "quantise_int16")


def encoder_mismatch(expected: dict, found: dict) -> list[str]:
    """The encoder settings that differ between two descriptions (empty when they match)."""
    return [f"{k}: {expected.get(k)!r} vs {found.get(k)!r}" for k in ENCODER_IDENTITY if expected.get(k) != found.get(k)]


def _matrix(column, dim: int) -> np.ndarray:
    """An Arrow list / fixed-size-list column of vectors as a (N, dim) float array (no Python rows)."""
    import pyarrow as pa

    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if len(column) == 0:
        return np.zeros((0, dim), np.float32)
    values = column.flatten().to_numpy(zero_copy_only=False)
    return values.reshape(len(column), dim)


__all__ = [
    "encoder_mismatch",
    "FeatureStore",
    "StoreError",
    "checksum",
    "features",
    "rows_to_dataset",
    "store_header",
    "write_split",
    "FORMAT_VERSION",
]
