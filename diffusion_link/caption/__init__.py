"""Stage 3: an LLM with a LoRA adapter captions from a (bridged) CLAP embedding."""

from diffusion_link.caption.model import CaptionerConfig, CaptionModel, DecodingOptions, LoraOptions
from diffusion_link.caption.module import CaptionerModule, MetricOptions
from diffusion_link.caption.writer import CaptionWriter

__all__ = ["CaptionModel", "CaptionWriter", "CaptionerConfig", "CaptionerModule", "DecodingOptions", "LoraOptions", "MetricOptions"]
