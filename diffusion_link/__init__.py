"""Diffusion-Link: bridging the audio-text modality gap of CLAP with a diffusion model.

The pipeline, one sub-package a stage: ``data`` (sources, feature store, DataModules) ->
``encoder`` (frozen CLAP) -> ``cache`` (stage 1: features to a store) -> ``bridge`` (stage 2) ->
``caption`` (stage 3). ``cli`` is the one command line over all of them.
"""

__version__ = "0.1.0"
