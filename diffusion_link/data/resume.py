"""What a checkpoint must hold, beyond Lightning's own state, for a fit resumed from it to replay the
uninterrupted fit bit for bit (issue 18: ``kill -9`` mid-fit, then the rerun resumes from ``last.ckpt``).

Lightning restores the weights, optimizer, LR scheduler and loop progress, but not

* **where the training loader was in its epoch's order**: a plain shuffled ``DataLoader`` starts a new
  permutation. :class:`ResumableLoader` is *stateful* (``state_dict`` / ``load_state_dict``), which Lightning
  saves in the checkpoint (``loops.fit_loop.state_dict.combined_loader``) and hands back before the resumed
  epoch's first batch; its :class:`ResumableSampler` is a ``DistributedSampler`` (one permutation per epoch,
  seeded by seed + epoch, dealt to the processes), so Lightning keeps it under DDP instead of injecting its own;
* **the random state**: the resumed process seeds everything again and would replay the stream of step 0.
  :class:`RandomState` keeps torch's (CPU and CUDA), numpy's and Python's global generators of every process
  in the checkpoint and puts them back when the resumed fit starts training.

Generators of our own (the encoder's crops, the captioner's sample seeds) are seeded from the global step
or from fixed seeds, so the restored step restores them.
"""

from __future__ import annotations

import math
import os
from typing import Any, Iterator

import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from diffusion_link.data.loaders import workers_die_with_parent


class ResumableSampler(DistributedSampler):
    """``DistributedSampler`` (shuffled: a permutation seeded by ``seed + epoch``; padded so that every process
    gets as many items, each process taking every ``num_replicas``-th from ``rank``) whose next pass can start
    part-way: ``start`` items of this process's share are skipped once."""

    def __init__(self, dataset: Dataset, num_replicas: int = 1, rank: int = 0, seed: int = 0):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.start = 0

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        start, self.start = self.start, 0
        return iter(indices[start:])


class ResumableLoader(DataLoader):
    """A training ``DataLoader`` over a :class:`ResumableSampler` whose state is (seed, epoch, batches of the
    epoch handed out, processes, batch size). Loaded from a checkpoint, its next pass is the rest of that epoch,
    in the same order; a finished epoch resumes at the start of the next one; an unfinished epoch saved with
    another process count or batch size restarts from its start, with a warning. Worker processes (if any) are seeded from
    seed + epoch as well, not from the global generator."""

    def __init__(self, dataset: Dataset, sampler: ResumableSampler, **kwargs: Any):
        kwargs.pop("generator", None)
        super().__init__(dataset, sampler=sampler, generator=torch.Generator(), **kwargs)
        self.handed_out = 0  # batches of the current pass (epoch) given to the fit
        self._resume_at = 0  # batches of the next pass to skip (a resumed epoch)

    def __iter__(self) -> Iterator:
        sampler = self.sampler
        self.generator.manual_seed(sampler.seed + sampler.epoch)
        self.handed_out, self._resume_at = self._resume_at, 0
        sampler.start = self.handed_out * self.batch_size
        return self._counted(super().__iter__())

    def _counted(self, batches: Iterator) -> Iterator:
        for batch in batches:
            self.handed_out += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {
            "seed": self.sampler.seed,
            "epoch": self.sampler.epoch,
            "batches": self.handed_out,
            "num_replicas": self.sampler.num_replicas,
            "batch_size": self.batch_size,
        }

    def _passes(self, num_replicas: int, batch_size: int) -> int:
        """Batches of one process's pass with that many processes and that batch size."""
        share = math.ceil(len(self.dataset) / num_replicas)  # DistributedSampler pads every share to this
        return share // batch_size if self.drop_last else math.ceil(share / batch_size)

    def load_state_dict(self, state: dict[str, int]) -> None:
        # a state without them (saved before they were kept) is taken as saved by this layout
        saved = (state.get("num_replicas", self.sampler.num_replicas), state.get("batch_size", self.batch_size))
        now = (self.sampler.num_replicas, self.batch_size)
        finished = state["batches"] >= self._passes(*saved)
        self.sampler.seed = state["seed"]
        self.sampler.set_epoch(state["epoch"] + 1 if finished else state["epoch"])
        self._resume_at = 0 if finished else state["batches"]
        if saved != now and not finished:  # its batch count is of another share / batch size: not a position here
            self._resume_at = 0
            rank_zero_warn(
                f"the checkpoint's training loader ran {saved[0]} process(es) with batch size {saved[1]} and this fit runs "
                f"{now[0]} with batch size {now[1]}: its epoch {state['epoch']} restarts from its first batch (its "
                f"{state['batches']} batch(es) handed out are not a position in this layout), so the resumed fit will not "
                "replay the uninterrupted one"
            )


def train_loader(datamodule: Any, dataset: Dataset, batch_size: int, **kwargs: Any) -> ResumableLoader:
    """The training loader of every fit (the encoder's clip DataModule, the bridge and captioner fits' feature
    DataModule): shuffled, one permutation per epoch seeded by the run's seed
    (``seed_everything``, as Lightning's own distributed sampler is), this process's share of it under DDP, and
    resumable mid-epoch. ``kwargs``: the other ``DataLoader`` arguments (workers die with their process)."""
    trainer = getattr(datamodule, "trainer", None)
    shares = (getattr(trainer, "distributed_sampler_kwargs", None) if trainer is not None else None) or {}
    sampler = ResumableSampler(
        dataset,
        num_replicas=shares.get("num_replicas", 1),
        rank=shares.get("rank", 0),
        seed=int(os.environ.get("PL_GLOBAL_SEED", 0)),
    )
    return ResumableLoader(dataset, sampler, batch_size=batch_size, **workers_die_with_parent(kwargs))


def _collect() -> dict[str, Any]:
    """This process's global random state, in types a ``weights_only`` checkpoint load accepts."""
    from lightning.fabric.utilities.seed import _collect_rng_states

    states = _collect_rng_states(include_cuda=torch.cuda.is_available())
    kind, key, pos, has_gauss, gauss = states["numpy"]
    states["numpy"] = [kind, torch.from_numpy(key.astype("int64")), int(pos), int(has_gauss), float(gauss)]
    states["python"] = [states["python"][0], list(states["python"][1]), states["python"][2]]
    return states


def _apply(states: dict[str, Any]) -> None:
    from lightning.fabric.utilities.seed import _set_rng_states

    kind, key, pos, has_gauss, gauss = states["numpy"]
    states = {**states, "numpy": (kind, key.numpy().astype("uint32"), pos, has_gauss, gauss)}
    if not torch.cuda.is_available():
        states.pop("torch.cuda", None)
    _set_rng_states(states)


class RandomState(Callback):
    """Keeps the global random state of every process (torch CPU and CUDA, numpy, Python ``random``) in each
    checkpoint, taken when the checkpoint is saved, and puts it back when a fit resumed from that checkpoint
    starts training (``on_train_start``: after ``seed_everything``, the model's initialisation, the sanity check
    and the loaders' set-up, which the uninterrupted fit did before its first step), so the resumed fit draws
    the noise, timesteps and dropout the uninterrupted one drew after that step."""

    def __init__(self) -> None:
        self._trainer = None
        self._loaded: list[dict[str, Any]] | None = None

    def setup(self, trainer, pl_module, stage: str) -> None:
        self._trainer = trainer

    def state_dict(self) -> dict[str, Any]:
        states = [_collect()]
        trainer = self._trainer
        if trainer is not None and trainer.world_size > 1:  # every process saves the checkpoint's callbacks' state
            gathered: list = [None] * trainer.world_size
            torch.distributed.all_gather_object(gathered, states[0])
            states = gathered
        return {"processes": states}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._loaded = state_dict["processes"]

    def on_train_start(self, trainer, pl_module) -> None:
        if self._loaded is None:
            if trainer.ckpt_path and trainer.global_step:
                rank_zero_warn(f"{trainer.ckpt_path} holds no random state (written without RandomState): the resumed fit draws a new random stream")
            return
        states, self._loaded = self._loaded, None
        if len(states) != trainer.world_size:
            rank_zero_warn(
                f"the checkpoint holds the random state of {len(states)} process(es) and this fit runs {trainer.world_size}: "
                "each continues from one of them, so the resumed fit will not replay the uninterrupted one"
            )
        _apply(states[trainer.global_rank % len(states)])


__all__ = ["RandomState", "ResumableLoader", "ResumableSampler", "train_loader"]
