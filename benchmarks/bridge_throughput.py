"""Issue figure: bridge sampling and training throughput against the machine's float32 matmul rate.

    python benchmarks/bridge_throughput.py [--dim 512] [--hidden 2048] [--batch 1024] [--device cpu]

Roofline: the float32 rate of one large square matmul (torch.mm, n = 2048) measured here.
Sampling: DiffusionLink.bridge on a batch of 1024 embeddings, K = 5 DDIM steps (EMA weights),
FLOPs = K x the denoiser's linear layers (2 x multiply-adds per item), two ways: the batch at once
(``keyed=False``: bulk bridging, the bound applies) and keyed (the default: chunks of KEYED_CHUNK rows, the last padded, each row's noise from its
own generator, which the test rows, predict and AudioCaptioner use so that a clip's result never depends on its batch). Training: BridgeModule's
training_step + backward + AdamW step on batches of pairs (both loss branches and the topology
loss), FLOPs ~ 3 x forward per branch. Bound: sampling >= 50 % of the roofline.
"""

from __future__ import annotations

import argparse
import time

import torch


def rate(fn, min_seconds: float = 2.0, warmup: int = 2) -> float:
    """Calls per second of ``fn`` (after warm-up), timed over at least ``min_seconds``."""
    for _ in range(warmup):
        fn()
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    sync()
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < min_seconds:
        fn()
        calls += 1
    sync()
    return calls / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    from diffusion_link.bridge import BridgeConfig, BridgeModule
    from diffusion_link.bridge.model import KEYED_CHUNK

    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = False  # a float32 roofline for float32 work
    n = 2048
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    roofline = 2 * n**3 * rate(lambda: torch.mm(a, b))

    module = BridgeModule(BridgeConfig(dim=args.dim, hidden=args.hidden, steps=args.steps)).to(device)
    model = module.model
    forward_flops = model.denoiser.flops_per_item()
    audio = torch.nn.functional.normalize(torch.randn(args.batch, args.dim, device=device), dim=-1)
    sampling = args.batch * rate(lambda: model.bridge(audio, keyed=False))
    sampling_flops = sampling * args.steps * forward_flops
    exact = args.batch * rate(lambda: model.bridge(audio), min_seconds=1.0, warmup=1)

    optimizer = module.configure_optimizers()["optimizer"]
    module.log = module.log_dict = lambda *a, **k: None  # no trainer attached: logging is a no-op here
    batch = {"audio_embedding": audio, "text_embedding": torch.nn.functional.normalize(torch.randn_like(audio), dim=-1)}

    def train_step():
        optimizer.zero_grad(set_to_none=True)
        module.training_step(batch, 0).backward()
        optimizer.step()
        model.update_ema()

    training = args.batch * rate(train_step)
    training_flops = training * 2 * 3 * forward_flops  # two loss branches, forward + backward ~ 3x forward

    print(f"device: {device}   threads: {torch.get_num_threads()}   D={args.dim} H={args.hidden} blocks=3 batch={args.batch}")
    print(f"float32 matmul roofline (n={n}):    {roofline / 1e9:8.1f} GFLOP/s")
    print(f"denoiser forward:                   {forward_flops / 1e6:8.2f} MFLOP per embedding")
    print(
        f"sampling (K={args.steps} DDIM, batch {args.batch}):  {sampling:10.0f} embeddings/s = "
        f"{sampling_flops / 1e9:7.1f} GFLOP/s = {sampling_flops / roofline:6.1%} of roofline   bound: >= 50%   "
        f"{'PASS' if sampling_flops >= 0.5 * roofline else 'FAIL'}"
    )
    print(
        f"sampling keyed (the default, chunks of {KEYED_CHUNK}): {exact:10.0f} embeddings/s = "
        f"{exact * args.steps * forward_flops / roofline:6.1%} of roofline (no bound: the price of batch-independent results)"
    )
    print(
        f"training (2 branches + topology):   {training:10.0f} pairs/s      = {training_flops / 1e9:7.1f} GFLOP/s = "
        f"{training_flops / roofline:6.1%} of roofline"
    )


if __name__ == "__main__":
    main()
