"""Issue figure: SmolLM2 captioner speed and memory on the CPU, and what the bridge adds.

    python benchmarks/caption_speed.py [--llm smollm2-135m-instruct] [--beams 4] [--tokens 30]

For batch sizes 1 and 8: captions/s of CaptionModel.generate (beam search, fixed max_new_tokens, EOS
disabled so every run decodes the same number of tokens), peak resident memory of the process, and
the time of DiffusionLink.bridge (K=5, D=512, H=2048) on the same batch, as a fraction of the caption
latency. Bound: the bridge adds < 2 % to caption latency.
"""

from __future__ import annotations

import argparse
import resource
import time

import torch


def best_of(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--llm", default="smollm2-135m-instruct")
    parser.add_argument("--beams", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=30)
    args = parser.parse_args()

    from diffusion_link.bridge import BridgeConfig, DiffusionLink
    from diffusion_link.caption import CaptionerConfig, CaptionModel, DecodingOptions

    torch.manual_seed(0)
    model = CaptionModel(CaptionerConfig(llm=args.llm)).eval()
    model.tokenizer.eos_token_id = None  # decode exactly --tokens tokens every time
    bridge = DiffusionLink(BridgeConfig()).eval()
    options = DecodingOptions(num_beams=args.beams, max_new_tokens=args.tokens)
    rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # noqa: E731  (MB)
    print(f"LLM: {args.llm}  beams: {args.beams}  new tokens: {args.tokens}  threads: {torch.get_num_threads()}")
    print(f"peak RSS after loading: {rss():.0f} MB")
    for batch in (1, 8):
        audio = torch.nn.functional.normalize(torch.randn(batch, 512), dim=-1)
        model.generate(model_input := bridge.bridge(audio), options)  # warm-up
        caption = best_of(lambda: model.generate(model_input, options), repeats=2)
        bridged = best_of(lambda: bridge.bridge(audio), repeats=5)
        share = bridged / (caption + bridged)
        print(
            f"batch {batch}: {batch / caption:6.2f} captions/s  ({caption / batch * 1000:7.1f} ms/caption)  peak RSS {rss():6.0f} MB  "
            f"bridge {bridged / batch * 1000:6.2f} ms/caption = {share:.2%} of latency   bound: < 2%   {'PASS' if share < 0.02 else 'FAIL'}"
        )


if __name__ == "__main__":
    main()
