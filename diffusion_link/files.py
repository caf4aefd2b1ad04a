"""Writing files and folders so that a reader, or a run killed half-way, never sees half of one.

Everything the pipeline writes for another stage to read (exports, stores, shards, the converted LLM,
the demo data, JSON headers, the report page) goes through these two helpers: build under a temporary
sibling name, then rename into place (a rename within one file system is atomic).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_folder(target: str | Path, replace: bool = True) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``target``; when the block ends without error it becomes
    ``target``, else it is removed and ``target`` is untouched.

    ``replace``: an existing ``target`` is replaced (removed just before the rename); with ``False`` it is
    kept and the new folder dropped (several processes building the same thing: the first one wins).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if target.exists() and replace:
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        else:
            target.unlink()
    try:
        tmp.rename(target)
    except OSError:  # target exists (kept, or made meanwhile by another process)
        shutil.rmtree(tmp, ignore_errors=True)
        if replace:
            raise


def write_atomic(path: str | Path, data: str | bytes) -> Path:
    """Write a file through a temporary sibling and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:6]}")
    try:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_json(path: str | Path, payload: dict) -> Path:
    """Atomic JSON (indented, sorted keys; anything else as ``str``)."""
    return write_atomic(path, json.dumps(payload, indent=2, sort_keys=True, default=str))
