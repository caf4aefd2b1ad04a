"""A fit resumed from a checkpoint replays the uninterrupted fit bit for bit (issue 18): the training loader
continues its epoch's order (diffusion_link.data.resume.ResumableLoader) and the random state comes back
(RandomState). Each resume starts from a checkpoint the uninterrupted fit saved, which is what a fit killed
right after that checkpoint leaves on disk."""

import shutil

import lightning as L
import numpy as np
import pytest
import torch
from torch.utils.data import DistributedSampler
from helpers import bridge_updates, caption_updates, repo_config, run_cli, run_stage
from safetensors.torch import load_file

from diffusion_link.bridge import BridgeConfig, BridgeModule
from diffusion_link.cli import main
from diffusion_link.data import FeatureDataModule
from diffusion_link.data.resume import RandomState, ResumableLoader, ResumableSampler
from diffusion_link.data.store import rows_to_dataset, store_header
from diffusion_link.files import write_json

# -- the sampler and the loader alone -----------------------------------------------------------------


def _order(loader) -> list[int]:
    return [int(i) for batch in loader for i in batch]


def test_sampler_is_a_distributed_sampler_whose_pass_can_start_part_way():
    sampler = ResumableSampler(range(10), seed=3)
    sampler.set_epoch(1)
    full = list(sampler)
    assert sorted(full) == list(range(10)) and full != list(range(10))
    sampler.set_epoch(2)
    assert list(sampler) != full  # a new permutation each epoch
    sampler.set_epoch(1)
    sampler.start = 4
    assert list(sampler) == full[4:] and list(sampler) == full  # the skip applies to one pass only
    shares = [list(ResumableSampler(range(10), num_replicas=3, rank=r, seed=3)) for r in range(3)]
    torch_shares = [list(DistributedSampler(range(10), num_replicas=3, rank=r, seed=3)) for r in range(3)]
    assert shares == torch_shares and set().union(*shares) == set(range(10))  # DDP: torch's shares of the epoch
    assert all(len(s) == 4 for s in shares) and sum(len(set(s)) for s in shares) == 12  # 10 items, 2 repeated as padding


@pytest.mark.parametrize("stop_after", [0, 1, 2, 3])
def test_loader_state_resumes_its_epoch_in_the_same_order(stop_after):
    def loader():
        return ResumableLoader(list(range(11)), ResumableSampler(range(11), seed=7), batch_size=3)

    first = loader()
    first.sampler.set_epoch(5)
    expected = [b.tolist() for b in first]
    it = iter(first)
    seen = [next(it).tolist() for _ in range(stop_after)]
    state = first.state_dict()
    assert state == {"seed": 7, "epoch": 5, "batches": stop_after, "num_replicas": 1, "batch_size": 3}
    second = loader()  # a new process: another loader, given the state
    second.load_state_dict(state)
    assert seen + [b.tolist() for b in second] == expected
    assert [b.tolist() for b in second] == expected  # the next pass of the same epoch is whole again


def test_a_finished_epoch_resumes_at_the_next():
    first = ResumableLoader(list(range(6)), ResumableSampler(range(6), seed=1), batch_size=2)
    assert len(_order(first)) == 6 and first.state_dict() == {"seed": 1, "epoch": 0, "batches": 3, "num_replicas": 1, "batch_size": 2}
    second = ResumableLoader(list(range(6)), ResumableSampler(range(6), seed=1), batch_size=2)
    second.load_state_dict(first.state_dict())
    first.sampler.set_epoch(1)
    assert second.sampler.epoch == 1 and _order(second) == _order(first)


@pytest.mark.parametrize("saved", [{"num_replicas": 2, "batch_size": 2}, {"num_replicas": 1, "batch_size": 3}])
def test_a_state_from_another_process_count_or_batch_size_restarts_its_epoch_with_a_warning(saved):
    """2 batches of a 2-process share (5 of 10 items each) are not 4 items of this process's 10: the epoch
    restarts whole, and says so."""
    two = ResumableLoader(list(range(10)), ResumableSampler(range(10), num_replicas=saved["num_replicas"], seed=4), batch_size=saved["batch_size"])
    two.sampler.set_epoch(3)
    it = iter(two)
    next(it), next(it)
    state = two.state_dict()
    assert state["num_replicas"] == saved["num_replicas"] and state["batch_size"] == saved["batch_size"] and state["batches"] == 2
    one = ResumableLoader(list(range(10)), ResumableSampler(range(10), seed=4), batch_size=2)
    with pytest.warns(UserWarning, match=rf"ran {saved['num_replicas']} process\(es\) with batch size {saved['batch_size']}.*epoch 3 restarts"):
        one.load_state_dict(state)
    order = _order(one)
    assert one.sampler.epoch == 3 and sorted(order) == list(range(10))  # the whole epoch, every item once
    one.sampler.set_epoch(3)
    assert order == _order(one)  # from its start, in its order


# -- a bridge fit, resumed from each of its checkpoints (mid-epoch and at an epoch's end) ----------------


def _store(tmp, n=8, dim=8):
    rng = np.random.default_rng(0)
    rows = {
        "clip_id": [f"c{i}" for i in range(n)],
        "audio_embedding": list(rng.standard_normal((n, dim)).astype(np.float32)),
        "captions": [["x", "y"]] * n,
        "text_embeddings": list(rng.standard_normal((n, 2, dim)).astype(np.float32)),
    }
    for split in ("train", "test"):
        rows_to_dataset(rows, dim).save_to_disk(str(tmp / split))
    write_json(tmp / "store.json", {**store_header(dim, {"family": "synthetic", "weights": "a"}, {}), "status": "complete"})
    return tmp


def _bridge_fit(store, steps, callbacks, ckpt_path=None):
    from lightning.pytorch.callbacks import ModelCheckpoint

    checkpoints = any(isinstance(c, ModelCheckpoint) for c in callbacks)  # no default one writing into the work tree
    L.seed_everything(0)  # a new process seeds again
    module = BridgeModule(BridgeConfig(dim=8, hidden=16), warmup_steps=2)
    trainer = L.Trainer(
        max_steps=steps,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        callbacks=callbacks,
        enable_checkpointing=checkpoints,
        num_sanity_val_steps=1,
    )
    data = FeatureDataModule(str(store), batch_size=5, val_split="test")  # 16 pairs: 4 batches an epoch, the last of 1
    run_stage(trainer, "fit", module, data, ckpt_path=ckpt_path, weights_only=False)  # hparams hold a BridgeConfig
    return {k: v.clone() for k, v in module.state_dict().items()}


def test_a_resumed_bridge_fit_equals_the_uninterrupted_one(tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    store = _store(tmp_path / "s")
    every = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=1, save_top_k=-1)
    uninterrupted = _bridge_fit(store, 7, [every, RandomState()])
    for step, epoch, batches in ((2, 0, 2), (4, 0, 4), (5, 1, 1)):  # mid-epoch 0, end of epoch 0, first batch of epoch 1
        ckpt = next((tmp_path / "ckpt").glob(f"*-step={step}.ckpt"))
        saved = torch.load(ckpt, weights_only=False)
        layout = {"num_replicas": 1, "batch_size": 5}
        assert saved["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [{"seed": 0, "epoch": epoch, "batches": batches, **layout}]
        resumed = _bridge_fit(store, 7, [RandomState()], ckpt_path=str(ckpt))
        differ = [k for k in uninterrupted if not torch.equal(uninterrupted[k], resumed[k])]
        assert not differ, f"resumed from step {step}: {differ[:4]} differ"
        assert int(resumed["model.ema.n_averaged"]) == 7


@pytest.mark.parametrize("without", ["random state", "resumable loader"])
def test_without_either_a_resumed_fit_differs(without, tmp_path, monkeypatch):
    """The test above can fail: without RandomState the resumed fit draws the noise of step 0 again; with a
    plain shuffled loader it trains on a new permutation of the interrupted epoch."""
    from lightning.pytorch.callbacks import ModelCheckpoint
    from torch.utils.data import DataLoader

    from diffusion_link.data.feature_modules import collate_pairs

    if without == "resumable loader":
        plain = lambda self: DataLoader(self._dataset("fit"), batch_size=5, shuffle=True, collate_fn=collate_pairs)  # noqa: E731
        monkeypatch.setattr(FeatureDataModule, "train_dataloader", plain)
    store = _store(tmp_path / "s")
    every = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=2, save_top_k=-1)
    callbacks = [] if without == "random state" else [RandomState()]
    uninterrupted = _bridge_fit(store, 4, [every, *callbacks])
    resumed = _bridge_fit(store, 4, callbacks, ckpt_path=str(next((tmp_path / "ckpt").glob("*-step=2.ckpt"))))
    assert [k for k in uninterrupted if not torch.equal(uninterrupted[k], resumed[k])]


# -- through the CLI, as `diffusion-link run` resumes: --run_dir keeps last.ckpt, the rerun passes --ckpt_path ------


def _tensors(folder):
    return {f"{p.name}/{k}": v for p in sorted(folder.rglob("*.safetensors")) for k, v in load_file(p).items()}


@pytest.mark.parametrize("stage", ["bridge", "caption"])
def test_a_resumed_cli_fit_exports_the_uninterrupted_weights(stage, demo_store, tmp_path):
    """The fit runs whole (a checkpoint every 3 steps), its export is put aside, and the same command is rerun
    from its last.ckpt (step 6 of 7) as the runner reruns a killed step: the export is the same, bit for bit."""
    if stage == "bridge":
        config = repo_config("configs/bridge/demo.yaml", tmp_path, bridge_updates(tmp_path, demo_store, "fit", hidden=16, steps=7))
    else:
        config = repo_config("configs/caption/zero-shot.yaml", tmp_path, caption_updates(tmp_path, demo_store, "fit", steps=7))
    command = ["fit", "--config", str(config), "--checkpoint_every", "3"]
    main(command)
    last = tmp_path / "fit/checkpoints/last.ckpt"
    saved = torch.load(last, weights_only=False)
    assert saved["global_step"] == 6 and "RandomState" in saved["callbacks"]
    assert saved["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]["batches"] > 0  # mid-epoch (or at its end)
    shutil.move(tmp_path / "fit/export", tmp_path / "whole")
    main([*command, "--ckpt_path", str(last)])
    whole, resumed = _tensors(tmp_path / "whole"), _tensors(tmp_path / "fit/export")
    assert whole and whole.keys() == resumed.keys()
    differ = [k for k in whole if not torch.equal(whole[k], resumed[k])]
    assert not differ, f"{differ[:4]} differ"


def test_a_moved_run_folder_resumes_into_its_new_place(demo_store, bridge_export, tmp_path):
    """Lightning fills the model's options from the checkpoint's hyperparameters; what the resumed fit reads by
    path (a supervised captioner's bridge) and where it writes (export_dir, from --run_dir) are the command's: a
    run folder moved elsewhere resumes reading and writing in its new place, not the old one."""
    updates = caption_updates(tmp_path, demo_store, "old", mode="supervised", steps=4)
    del updates["run_dir"], updates["trainer"]["default_root_dir"], updates["trainer"]["logger"]["init_args"]["save_dir"]
    for key in ("export_dir", "output_dir", "bridge"):
        del updates["model"]["init_args"][key]
    config = repo_config("configs/caption/supervised.yaml", tmp_path, updates)
    command = ["fit", "--config", str(config), "--checkpoint_every", "3"]
    shutil.copytree(bridge_export, tmp_path / "old" / "bridge")
    main([*command, "--run_dir", str(tmp_path / "old"), "--model.init_args.bridge", str(tmp_path / "old" / "bridge")])
    shutil.move(tmp_path / "old", tmp_path / "new")
    shutil.rmtree(tmp_path / "new" / "export")
    new = ["--run_dir", str(tmp_path / "new"), "--model.init_args.bridge", str(tmp_path / "new" / "bridge")]
    main([*command, *new, "--ckpt_path", str(tmp_path / "new/checkpoints/last.ckpt")])
    assert (tmp_path / "new/export/config.json").is_file()
    assert not (tmp_path / "old").exists()


def test_the_train_loader_gives_each_process_its_share_and_lightning_keeps_it(demo_store):
    """Under DDP (faked: the trainer's sampler arguments) the training pairs are dealt to the processes as
    torch's DistributedSampler deals them, which Lightning keeps instead of injecting its own."""
    from types import SimpleNamespace

    from lightning.fabric.utilities.types import _Stateful

    dm = FeatureDataModule(str(demo_store), batch_size=4, val_split=None)
    dm.setup("fit")
    shares = []
    for rank in (0, 1):
        dm.trainer = SimpleNamespace(distributed_sampler_kwargs={"num_replicas": 2, "rank": rank})
        loader = dm.train_dataloader()
        assert isinstance(loader.sampler, DistributedSampler) and isinstance(loader, _Stateful)  # what Lightning saves and restores
        shares.append(list(loader.sampler))
    n = len(dm._dataset("fit"))
    assert shares == [list(DistributedSampler(range(n), num_replicas=2, rank=r, seed=0)) for r in (0, 1)]
    assert set(shares[0]) | set(shares[1]) == set(range(n))


@pytest.mark.slow  # make test-full (DDP)
def test_a_resumed_ddp_fit_exports_the_uninterrupted_weights(demo_store, tmp_path):
    """Two processes: each keeps its own random state in the checkpoint and its share of the epoch."""
    config = repo_config("configs/bridge/demo.yaml", tmp_path, bridge_updates(tmp_path, demo_store, "fit", hidden=16, steps=5))
    command = ["fit", "--config", str(config), "--checkpoint_every", "3", "--trainer.strategy=ddp", "--trainer.devices=2", "--trainer.limit_val_batches=0"]
    for resume in ([], ["--ckpt_path", str(tmp_path / "fit/checkpoints/last.ckpt")]):
        run = run_cli(command + resume, env={"OMP_NUM_THREADS": "1"})
        assert run.returncode == 0, run.stderr[-3000:]
        if not resume:
            saved = torch.load(tmp_path / "fit/checkpoints/last.ckpt", weights_only=False)
            assert saved["global_step"] == 3 and len(saved["callbacks"]["RandomState"]["processes"]) == 2  # mid-epoch: 4 batches a process
            shutil.move(tmp_path / "fit/export", tmp_path / "whole")
    whole, resumed = _tensors(tmp_path / "whole"), _tensors(tmp_path / "fit/export")
    assert whole and not [k for k in whole if not torch.equal(whole[k], resumed[k])]
