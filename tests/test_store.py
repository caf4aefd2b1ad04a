"""The feature store contract: what another tool writes, the later stages read."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from diffusion_link.data import FeatureDataModule
from diffusion_link.data.store import FeatureStore, StoreError, checksum, rows_to_dataset

from helpers import REPO


@pytest.fixture
def independent(tmp_path):
    subprocess.run([sys.executable, str(REPO / "tests/data/independent_store.py"), str(tmp_path / "s"), "7", "16"], check=True)
    return tmp_path / "s"


def test_store_from_an_independent_script_is_accepted(independent):
    store = FeatureStore(independent)
    assert store.dim == 16 and store.splits == ["test", "train"]
    assert list(store.caption_counts("test")) == [5, 5, 5]
    dm = FeatureDataModule(str(independent), batch_size=4, val_split=None)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["audio_embedding"].shape == (4, 16) and batch["text_embedding"].dtype == torch.float32
    dm.setup("test")
    clips = next(iter(dm.test_dataloader()))
    assert clips["text_embeddings"].shape == (3, 5, 16) and clips["n_refs"].tolist() == [5, 5, 5]
    assert clips["captions"][0][4] == "caption 4 of test0"


def test_evaluation_batches_have_their_own_size(independent):
    dm = FeatureDataModule(str(independent), batch_size=2, eval_batch_size=3, train_split="test", val_split="test")
    for stage in ("fit", "test", "predict"):
        dm.setup(stage)
    assert [len(b["caption"]) for b in dm.train_dataloader()] == [2] * 7 + [1]  # 15 (clip, caption) pairs
    for loader in (dm.val_dataloader(), dm.test_dataloader(), *dm.predict_dataloader()):
        assert len(next(iter(loader))["clip_id"]) == 3
    assert FeatureDataModule(str(independent), batch_size=2).eval_batch_size == 2  # default: the training size


def test_pairs_cover_every_caption_exactly_once(independent):
    dm = FeatureDataModule(str(independent), batch_size=3, train_split="test", val_split=None)
    dm.setup("fit")
    seen = [c for b in dm.train_dataloader() for c in b["caption"]]
    assert sorted(seen) == sorted(f"caption {k} of test{i}" for i in range(3) for k in range(5))
    # the text embedding of a pair is the one of its caption
    ds = FeatureStore(independent).split("test")
    dm = FeatureDataModule(str(independent), batch_size=15, train_split="test", val_split=None)
    dm.setup("fit")
    b = next(iter(dm.train_dataloader()))
    for clip, caption, emb in zip(b["clip_id"], b["caption"], b["text_embedding"]):
        row = list(ds["clip_id"]).index(clip)
        k = int(caption.split()[1])
        np.testing.assert_array_equal(np.asarray(ds[row]["text_embeddings"][k]), emb.numpy())


def test_bad_stores_are_clear_errors(tmp_path, independent):
    with pytest.raises(StoreError, match="store.json is missing"):
        FeatureStore(tmp_path)
    meta = json.loads((independent / "store.json").read_text())
    (independent / "store.json").write_text(json.dumps({**meta, "dim": 32}))
    with pytest.raises(StoreError, match="dim=32"):
        FeatureStore(independent).split("train")
    (independent / "store.json").write_text(json.dumps({**meta, "status": "incomplete"}))
    with pytest.raises(StoreError, match="interrupted"):
        FeatureStore(independent)
    (independent / "store.json").write_text(json.dumps({**meta, "format_version": 99}))
    with pytest.raises(StoreError, match="format_version"):
        FeatureStore(independent)
    (independent / "store.json").write_text(json.dumps(meta))
    with pytest.raises(StoreError, match="no split 'val'"):
        FeatureDataModule(str(independent)).setup("validate")


def test_empty_split_is_readable_and_refused_for_training(tmp_path):
    (tmp_path / "s").mkdir()
    rows_to_dataset({"clip_id": [], "audio_embedding": [], "captions": [], "text_embeddings": []}, 8).save_to_disk(str(tmp_path / "s" / "train"))
    (tmp_path / "s" / "store.json").write_text(json.dumps({"format_version": 1, "dim": 8}))
    assert len(FeatureStore(tmp_path / "s").split("train")) == 0
    with pytest.raises(StoreError, match="empty"):
        FeatureDataModule(str(tmp_path / "s"), val_split=None).setup("fit")


def test_evaluation_reads_every_clip_exactly_once_over_the_processes(independent):
    """Under DDP (faked: the trainer's sampler arguments) each process reads its own clips of the 3 test
    clips, none repeated to even the processes out, and the sampler is a DistributedSampler, which
    Lightning keeps instead of injecting its padded one; on one process the default order."""
    from types import SimpleNamespace

    from torch.utils.data import DistributedSampler

    from diffusion_link.data.loaders import evaluation_sampler

    dm = FeatureDataModule(str(independent), batch_size=2, train_split="test", val_split="test")
    dm.setup("test")
    seen = []
    for rank in (0, 1):
        dm.trainer = SimpleNamespace(distributed_sampler_kwargs={"num_replicas": 2, "rank": rank})
        loader = dm.test_dataloader()
        assert isinstance(loader.sampler, DistributedSampler)
        seen += [c for b in loader for c in b["clip_id"]]
    assert sorted(seen) == sorted(FeatureStore(independent).split("test")["clip_id"])
    assert evaluation_sampler(dm._datasets["test"], SimpleNamespace(distributed_sampler_kwargs=None)) is None


def test_checksum_changes_with_any_setting():
    base = {"encoder": {"crop": "centre", "weights": "random-init(seed=0)"}, "dim": 512}
    assert checksum(base) == checksum(json.loads(json.dumps(base)))
    assert checksum(base) != checksum({**base, "encoder": {**base["encoder"], "crop": "chunk_average"}})


def test_a_store_checksum_ignores_where_the_encoders_files_lie_not_what_they_hold():
    """A run folder copied or moved elsewhere reuses its stores: the encoder's export folder or checkpoint
    path is not part of the checksum, its weights' checksum is."""
    from diffusion_link.data.store import store_header

    encoder = {"family": "contrastive", "weights": "sha256:aa", "export": "/a/run/encoder/export", "checkpoint_path": None}
    here = store_header(512, encoder, {"source": "demo"})
    moved = store_header(512, {**encoder, "export": "/b/copy/encoder/export", "checkpoint_path": "/b/x.pt"}, {"source": "demo"})
    assert here["checksum"] == moved["checksum"] and moved["encoder"]["export"] == "/b/copy/encoder/export"  # still recorded
    assert here["checksum"] != store_header(512, {**encoder, "weights": "sha256:bb"}, {"source": "demo"})["checksum"]
