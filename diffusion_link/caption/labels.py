"""The default name of a captioning row: what the row is (the captioner's mode, its bridge, its input), so
a test run without ``name`` is never mislabelled."""

from __future__ import annotations

import json
from pathlib import Path


def bridge_name(bridge: str) -> str:
    """A bridge export's own name (its ``config.json``'s training record), else its folder's name."""
    folder = Path(bridge)
    try:
        name = json.loads((folder / "config.json").read_text()).get("training", {}).get("name")
    except (OSError, ValueError, AttributeError):
        name = None
    return str(name) if name else (folder.parent.name if folder.name == "export" else folder.name)


def row_label(mode: str, bridge: str | None, test_input: str = "audio") -> str:
    """``zero-shot, raw audio``, ``zero-shot + mean shift``, ``supervised + Diffusion-Link``, ``zero-shot, text embedding (ceiling)``."""
    if test_input == "text":
        return f"{mode}, text embedding (ceiling)"
    if bridge is None:
        return f"{mode}, raw audio"
    if bridge == "mean-shift":
        return f"{mode} + mean shift"
    if bridge == "projection-decoding":
        return f"{mode} + projection decoding"
    return f"{mode} + {bridge_name(bridge)}"


__all__ = ["bridge_name", "row_label"]
