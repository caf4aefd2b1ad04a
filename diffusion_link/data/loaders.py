"""The evaluation loader of every DataModule: under DDP each process reads its own clips, and every
clip exactly once.

Lightning's own distributed sampler pads the last batch with repeated items so that every process
gets as many; a repeated clip would count twice in recall, chance levels, gap metrics and caption
scores. Lightning keeps a sampler that is already a ``DistributedSampler`` (it injects its own only in
place of another), so the one built here is the one used, with or without ``use_distributed_sampler``.
"""

from __future__ import annotations

from typing import Any

from torch.utils.data import DataLoader, Dataset, Sampler


def evaluation_sampler(dataset: Dataset, trainer: Any) -> Sampler | None:
    """Lightning's ``UnrepeatedDistributedSampler`` (in order, not shuffled) when the trainer runs on
    several processes; ``None`` (the default sequential order) on one, or without a trainer."""
    kwargs = getattr(trainer, "distributed_sampler_kwargs", None) if trainer is not None else None
    if not kwargs or kwargs.get("num_replicas", 1) <= 1:
        return None
    from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler

    return UnrepeatedDistributedSampler(dataset, shuffle=False, **kwargs)


def evaluation_loader(datamodule: Any, dataset: Dataset, **kwargs: Any) -> DataLoader:
    """A validation / test / predict ``DataLoader`` over ``dataset`` (``kwargs``: batch size, collate,
    workers), in order, with :func:`evaluation_sampler` for the DataModule's trainer."""
    return DataLoader(dataset, shuffle=False, sampler=evaluation_sampler(dataset, getattr(datamodule, "trainer", None)), **kwargs)


__all__ = ["evaluation_loader", "evaluation_sampler"]
