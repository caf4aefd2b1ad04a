"""The evaluation loader of every DataModule: under DDP each process reads its own clips, and every
clip exactly once.

Lightning's own distributed sampler pads the last batch with repeated items so that every process
gets as many; a repeated clip would count twice in recall, chance levels, gap metrics and caption
scores. Lightning keeps a sampler that is already a ``DistributedSampler`` (it injects its own only in
place of another), so the one built here is the one used, with or without ``use_distributed_sampler``.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
from typing import Any, Callable

from torch.utils.data import DataLoader, Dataset, Sampler


def _worker_start(parent: int, then: Callable[[int], None] | None, worker_id: int) -> None:
    """A loader worker dies with the stage process that started it: on Linux the kernel sends it SIGKILL
    when that process dies (``PR_SET_PDEATHSIG``). Without it, a stage killed by SIGKILL (``kill -9`` of
    ``diffusion-link run`` kills its step the same way) left its workers behind for good: PyTorch's worker
    notices a dead parent only between items, and then waits forever to flush its result queue."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    try:
        os.kill(parent, 0)
    except ProcessLookupError:  # it died before the line above
        os._exit(1)
    if then is not None:
        then(worker_id)


def workers_die_with_parent(kwargs: dict[str, Any]) -> dict[str, Any]:
    """``DataLoader`` keyword arguments whose workers (if any) die with this process (:func:`_worker_start`);
    a ``worker_init_fn`` already there still runs after."""
    if not kwargs.get("num_workers"):
        return kwargs
    return {**kwargs, "worker_init_fn": functools.partial(_worker_start, os.getpid(), kwargs.get("worker_init_fn"))}


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
    sampler = evaluation_sampler(dataset, getattr(datamodule, "trainer", None))
    return DataLoader(dataset, shuffle=False, sampler=sampler, **workers_die_with_parent(kwargs))


__all__ = ["evaluation_loader", "evaluation_sampler", "workers_die_with_parent"]
