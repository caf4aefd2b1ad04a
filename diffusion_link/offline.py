"""Offline by default: the one place that sets the Hugging Face libraries' offline switches.

We never download. A hub look-up that slips through must fail in milliseconds, not retry for minutes.
The ``diffusion-link`` command calls :func:`default_offline` first thing (users with a warm cache are
unaffected; users who want the hub can set the variables to 0); code that must not reach the hub even
when they did (importing laion-clap, loading a dataset by id) runs inside :func:`hub_offline`.
"""

from __future__ import annotations

import contextlib
import os

OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")


def default_offline() -> None:
    """Set the offline switches unless the user set them (and quiet the tokenizers' fork warning)."""
    for key in OFFLINE_VARIABLES:
        os.environ.setdefault(key, "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@contextlib.contextmanager
def hub_offline():
    """The offline switches forced on for the duration of the block, then restored."""
    saved = {k: os.environ.get(k) for k in OFFLINE_VARIABLES}
    os.environ.update({k: "1" for k in saved})
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
