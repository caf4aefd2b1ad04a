"""``diffusion-link bridge-fit``: does a bridge export treat the clips it was fitted on (its training split)
differently from clips it never saw (val, test)? Reads a feature store and a bridge export, bridges every
clip of each split, and writes :func:`~diffusion_link.evaluation.bridge_fit.seen_unseen`'s table
(``bridge_fit.{csv,md}``). docs/method.md, "Cross-fitting".
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch

from diffusion_link.bridge.model import DiffusionLink
from diffusion_link.data.store import FeatureStore, StoreError, encoder_mismatch
from diffusion_link.evaluation.bridge_fit import SplitEmbeddings, format_seen_unseen, seen_unseen
from diffusion_link.files import write_atomic

DESCRIPTION = (
    "Measure whether a bridge treats the clips it was fitted on differently from held-out clips (issue 19, point 14): "
    "per-clip cosine to the references and the bridge's gain over raw audio, train − held-out with bootstrap intervals, "
    "Fréchet and centroid distance on equal clip counts."
)


def split_embeddings(store: FeatureStore, split: str, bridge: DiffusionLink, batch: int = 1024) -> SplitEmbeddings:
    """Every clip of ``split``: its audio raw and bridged, its references and their owners."""
    audio, refs, owner, start = [], [], [], 0
    for _, a, texts, rows in store.iter_arrays(split):
        refs.append(texts)
        owner.append(start + rows)
        audio.append(a)
        start += len(a)
    if not audio:
        raise StoreError(f"split '{split}' of {store.path} is empty")
    audio = np.concatenate(audio).astype(np.float32)
    bridged = np.concatenate([bridge.bridge(torch.from_numpy(audio[i : i + batch])).double().numpy() for i in range(0, len(audio), batch)])
    return SplitEmbeddings(bridged, audio.astype(np.float64), np.concatenate(refs).astype(np.float64), np.concatenate(owner))


def measure(export: str, store: str, out: str, splits: list[str] | None = None, resamples: int = 1000, subsets: int = 20, distance_resamples: int = 200):
    """Write ``bridge_fit.csv`` and ``bridge_fit.md`` under ``out``; returns the table's Markdown."""
    bridge = DiffusionLink.from_pretrained(export)
    fs = FeatureStore(store)
    if bridge.encoder and (diff := encoder_mismatch(bridge.encoder, fs.encoder)):
        raise StoreError(f"the bridge {export} was trained on another encoder than {store}'s: " + "; ".join(diff))
    training = (getattr(bridge, "meta", {}) or {}).get("training") or {}
    train = training.get("split") or "train"
    if training.get("store_checksum") and training["store_checksum"] != fs.meta.get("checksum"):
        raise StoreError(f"the bridge {export} was fitted on store {training.get('store')} (checksum {training['store_checksum']}), not on {store}")
    names = splits or [train, *(s for s in ("val", "test") if s in fs.splits)]
    if train not in names:
        names = [train, *names]
    data = {name: split_embeddings(fs, name, bridge) for name in names}
    results = seen_unseen(data, train, resamples, subsets, distance_resamples)
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    keys = sorted({k for row in results.values() for k in row})
    with open(folder / "bridge_fit.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["split", *keys])
        writer.writerows([[name, *(f"{row[k]:.6g}" if k in row else "" for k in keys)] for name, row in results.items()])
    name = training.get("name") or Path(export).parent.name
    md = (
        f"Bridge {name} ({export}), fitted on split '{train}' of {store}.\n\n"
        + format_seen_unseen(results, train)
        + "\n\ncos: each clip's mean cosine to its references; gain: bridged minus raw, per clip; [lo, hi]: 95 % bootstrap "
        f"interval ({resamples} resamples; train − split: each split resampled on its own). Distances on as many clips as the "
        f"smallest held-out split: the training split's as the mean and 2.5–97.5 % range over {subsets} random subsets of that "
        f"size, a held-out split's with its basic interval ({distance_resamples} resamples).\n"
    )
    write_atomic(folder / "bridge_fit.md", md)
    return md


def arguments(parser) -> None:
    parser.add_argument("export", help="a bridge export folder (e.g. artifacts/bridge/diffusion-link/export)")
    parser.add_argument("--store", required=True, help="the feature store it was fitted on (e.g. artifacts/stores/demo)")
    parser.add_argument("--out", required=True, help="folder for bridge_fit.{csv,md}")
    parser.add_argument("--splits", nargs="+", help="splits to compare (default: the bridge's training split, val and test)")
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples of the cosine intervals")
    parser.add_argument("--subsets", type=int, default=20, help="random subsets of the training split for its distances")
    parser.add_argument("--distance-resamples", type=int, default=200, help="bootstrap resamples of a held-out split's distances")


def main(args) -> int:
    print(measure(args.export, args.store, args.out, args.splits, args.resamples, args.subsets, args.distance_resamples))
    return 0
