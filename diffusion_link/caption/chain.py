"""Audio -> encoder -> bridge -> LLM: the one implementation of the captioning chain. The captioner's test
rows (stored embeddings), ``predict`` (a store, or a folder of audio files) and
:class:`~diffusion_link.api.AudioCaptioner` all call these two functions, so they caption a clip alike:

* :func:`caption_embeddings`: embeddings through a bridge setting (:class:`~diffusion_link.caption.inputs.Bridges`)
  and the LLM;
* :func:`caption_waves`: decoded waveforms through the encoder first (``None`` where a file failed).

What a clip's caption can depend on besides the clip: nothing in the encoder and the bridge. The encoder
embeds one clip at a time; a bridge takes chunks of one shape, a clip's sampling noise keyed by its embedding
(this relies on the BLAS computing a row of a product of one shape alike in any place and beside any rows,
which tests/test_api_exact.py checks). Only the LLM sees the batch: its matmuls may sum in another order at
another batch size or position (~1e-7 on the logits).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from contextlib import contextmanager, nullcontext

import numpy as np
import torch

from diffusion_link.caption.model import CaptionModel, DecodingOptions


class Timer:
    """Seconds spent per stage (``decode``, ``encoder``, ``bridge``, ``llm``), waiting for CUDA at each stage's end."""

    def __init__(self, device: torch.device):
        self.device = device
        self.seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def __call__(self, stage: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.seconds[stage] += time.perf_counter() - start


def caption_embeddings(
    model: CaptionModel,
    decoding: DecodingOptions,
    embeddings: torch.Tensor,
    bridge: Callable[[torch.Tensor], torch.Tensor],
    timer: Timer | None = None,
) -> list[str]:
    """Captions of (N, D) encoder embeddings: through ``bridge`` (a bridge setting of
    :class:`~diffusion_link.caption.inputs.Bridges`, bound; raw audio: normalised), then the LLM."""
    timer = timer or nullcontext
    with timer("bridge"):
        inputs = bridge(embeddings)
    with timer("llm"):
        return model.generate(inputs.to(model_device(model)), decoding) if len(inputs) else []


def caption_waves(
    encoder,
    waves: list[np.ndarray | None],
    model: CaptionModel,
    decoding: DecodingOptions,
    bridge: Callable[[torch.Tensor], torch.Tensor],
    timer: Timer | None = None,
) -> list[str | None]:
    """Captions of mono waveforms at the encoder's rate (``None`` in, ``None`` out: a file that failed)."""
    good = [i for i, w in enumerate(waves) if w is not None]
    captions: list[str | None] = [None] * len(waves)
    if good:
        with (timer or nullcontext)("encoder"):
            audio = encoder.encode_audio([waves[i] for i in good]).to(model_device(model))
        for i, caption in zip(good, caption_embeddings(model, decoding, audio, bridge, timer)):
            captions[i] = caption
    return captions


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


__all__ = ["Timer", "caption_embeddings", "caption_waves"]
