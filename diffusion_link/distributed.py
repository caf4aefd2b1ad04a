"""Gathering Python rows from every process (the captioner's predictions, its predict writer)."""

from __future__ import annotations


def gather_unique(rows: list, key) -> list:
    """Every process's rows on every process, once each (the distributed sampler repeats some), sorted."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        gathered: list = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, rows)
        rows = [r for part in gathered for r in part]
    return sorted({key(r): r for r in rows}.values(), key=key)
