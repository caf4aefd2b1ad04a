"""Issue figure: AudioCaptioner on a bundle, audio in, caption out: captions per second and peak memory at
batch 1 and 32, and the share of the time spent decoding, in the encoder, the bridge and the LLM.

    python benchmarks/caption_api.py [--bundle DIR] [--clips 32] [--device cpu]

The bundle: ``--bundle``, else ``artifacts/bundle`` (made from the demo run with ``diffusion-link bundle
artifacts --out artifacts/bundle`` when the demo's artifacts exist and it does not), else a tiny bundle of
untrained components (random-init CLAP, a small bridge, the tiny GPT-2) in a temporary folder: its
captions mean nothing, its times say what the API adds. Audio: the demo's test clips (32 kHz FLAC,
decoded and resampled by the API) when ``data/demo`` exists, else 10 s of 32 kHz noise per clip.
Peak memory: the process's peak resident set (CPU; it only grows, so the batch-1 figure comes first) and
CUDA's peak allocation on a GPU.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent


def tiny_bundle(out: Path) -> Path:
    """A bundle of untrained components, through the same writer as ``diffusion-link bundle``."""
    from diffusion_link.bridge.model import BridgeConfig, DiffusionLink
    from diffusion_link.bundle import assemble
    from diffusion_link.caption.model import CaptionerConfig, CaptionModel, DecodingOptions
    from diffusion_link.encoder import ClapConfig, ClapEncoder

    description = ClapEncoder(ClapConfig()).describe()
    DiffusionLink(BridgeConfig(hidden=256), description).save_pretrained(out.parent / "bridge", extra={"training": {"steps": 0, "split": "none"}})
    CaptionModel(CaptionerConfig(llm="tiny-gpt2")).save_pretrained(out.parent / "captioner", extra={"encoder": description, "mode": "zero-shot", "steps": 0})
    facts = {"run": "untrained components (benchmarks/caption_api.py)", "row": None, "gap": None}
    return assemble(out, description, out.parent / "bridge", out.parent / "captioner", asdict(DecodingOptions()), facts)


def find_bundle(requested: str | None, scratch: Path) -> tuple[Path, str]:
    if requested:
        return Path(requested), "given"
    demo = REPO / "artifacts" / "bundle"
    if (demo / "config.json").is_file():
        return demo, "the demo's"
    if (REPO / "artifacts" / "caption" / "zero-shot" / "export" / "config.json").is_file():
        from diffusion_link.bundle import bundle_run

        return bundle_run(REPO / "artifacts", demo), "the demo's (bundled now)"
    return tiny_bundle(scratch / "bundle"), "tiny, untrained"


def clips(n: int) -> list:
    test = REPO / "data" / "demo" / "audio" / "test"
    files = sorted(test.glob("*.flac"))[:n] if test.is_dir() else []
    if len(files) == n:
        return [str(f) for f in files]
    rng = np.random.default_rng(0)
    return [(0.1 * rng.standard_normal(320_000)).astype(np.float32) for _ in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", default=None)
    parser.add_argument("--clips", type=int, default=32)
    parser.add_argument("--device", default=None, help="default: cuda when there is one")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from diffusion_link import AudioCaptioner

    rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # noqa: E731  (MB)
    with tempfile.TemporaryDirectory() as scratch:
        folder, kind = find_bundle(args.bundle, Path(scratch))
        start = time.perf_counter()
        captioner = AudioCaptioner.from_pretrained(folder, device=args.device)
        print(f"bundle: {folder} ({kind}); loaded in {time.perf_counter() - start:.1f} s on {captioner.device}; threads {torch.get_num_threads()}")
        audio = clips(args.clips)
        kind = "file" if isinstance(audio[0], str) else "32 kHz waveform"
        print(f"{len(audio)} clips ({kind}s); decoding: {captioner.decoding}; peak RSS after loading: {rss():.0f} MB")
        captioner(audio[:2], sample_rate=32_000, batch_size=2)  # warm-up
        for batch in (1, 32):
            if captioner.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(captioner.device)
            captioner.reset_timings()
            start = time.perf_counter()
            captioner(audio, sample_rate=32_000, batch_size=batch)
            total = time.perf_counter() - start
            shares = "  ".join(f"{k} {v / total:5.1%}" for k, v in sorted(captioner.timings.items()))
            cuda = f"  CUDA peak {torch.cuda.max_memory_allocated(captioner.device) / 2**20:.0f} MB" if captioner.device.type == "cuda" else ""
            print(f"batch {batch:2d}: {len(audio) / total:7.2f} captions/s  peak RSS {rss():6.0f} MB{cuda}  time: {shares}")


if __name__ == "__main__":
    main()
