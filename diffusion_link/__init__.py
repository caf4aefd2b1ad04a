"""Diffusion-Link: bridging the audio-text modality gap of CLAP with a diffusion model.

The pipeline, one sub-package a stage: ``data`` (sources, feature store, DataModules) ->
``encoder`` (frozen CLAP) -> ``cache`` (stage 1: features to a store) -> ``bridge`` (stage 2) ->
``caption`` (stage 3). ``cli`` is the one command line over all of them.

``from diffusion_link import AudioCaptioner`` (:mod:`diffusion_link.api`) is imported on first use, so
that ``import diffusion_link`` stays cheap (no torch).
"""

__version__ = "0.2.0"

#: the package's face, imported on first use (PEP 562): name -> its module
_LAZY = {"AudioCaptioner": "diffusion_link.api", "Captions": "diffusion_link.api"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'diffusion_link' has no attribute {name!r}")
