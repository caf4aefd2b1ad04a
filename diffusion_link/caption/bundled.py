"""What a bundle (``diffusion-link bundle``) gives the captioner: its three components and its decoding
settings, as the settings of :class:`~diffusion_link.caption.CaptionerModule` (``predict``) and of
:class:`~diffusion_link.api.AudioCaptioner` take them."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

from diffusion_link.caption.model import DecodingOptions
from diffusion_link.encoder import ClapConfig
from diffusion_link.export import CLAP_REFERENCE, CONFIG, BundleError, read_bundle


def encoder_settings(folder: Path, clap_checkpoint: str | None = None) -> tuple[ClapConfig | None, str | None]:
    """A bundle's encoder component as ``(clap, encoder_export)`` of :func:`~diffusion_link.encoder.load_encoder`:
    the trained encoder's export, or laion-clap rebuilt from the bundle's reference, its checkpoint at
    ``clap_checkpoint`` (default: where it was bundled from). Whether it is the encoder the bridge and the
    captioner were trained on is checked against their records by whoever loads them."""
    config = json.loads((folder / CONFIG).read_text())
    if config.get("format") != CLAP_REFERENCE:
        return None, str(folder)
    checkpoint = config.get("checkpoint")
    path = clap_checkpoint or (checkpoint or {}).get("path")
    if checkpoint and not (path and Path(path).is_file()):
        raise BundleError(
            f"{folder}: the bundle's laion-clap encoder is the checkpoint {checkpoint.get('name')!r} (sha256 {checkpoint.get('sha256')}), "
            f"not found at {path}: give its path (AudioCaptioner.from_pretrained(..., clap_checkpoint=...), or predict's "
            "--model.init_args.clap.checkpoint)"
        )
    return ClapConfig(**{**config["clap"], "checkpoint": path if checkpoint else None}), None


def bundle_settings(folder: str | Path, clap_checkpoint: str | None = None) -> dict:
    """``pretrained``, ``bridge``, ``clap``, ``encoder_export``, ``decoding`` and ``bridge_weights`` of the bundle at ``folder`` (checked by
    :func:`~diffusion_link.export.read_bundle`; each component's files are checked by its loader)."""
    bundle = read_bundle(folder)
    paths = bundle["paths"]
    clap, export = encoder_settings(paths["encoder"], clap_checkpoint)
    known = {f.name for f in fields(DecodingOptions)}
    captioner = json.loads((Path(paths["captioner"]) / CONFIG).read_text())
    return {
        "pretrained": str(paths["captioner"]),
        "bridge": str(paths["bridge"]) if paths["bridge"] is not None else None,
        "clap": clap,
        "encoder_export": export,
        "decoding": DecodingOptions(**{k: v for k, v in (bundle.get("decoding") or {}).items() if k in known}),
        # the bridge's weights the captioner was trained and tested with (Diffusion Bridge's captioner: raw)
        "bridge_weights": captioner.get("bridge_weights") or "ema",
        "bundle": bundle,
    }
