"""Issue figure: cache-stage throughput vs the raw CLAP forward rate on the same clips.

    python benchmarks/cache_throughput.py [--clips 48] [--shard-size 16] [--workers 1]

Raw forward: the clips decoded into memory beforehand, then encoder.encode_audio + encode_text
in the same batches as the cache stage's shards, nothing else. Cache stage: the real
CacheModule + AudioDataModule + FeatureStoreWriter under trainer.predict (decoding in worker
processes, writing shards), timed from predict start to end by a callback.
Bound: cache >= 80 % of raw.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=48)
    parser.add_argument("--shard-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()

    import lightning as L

    from diffusion_link.cache import CacheModule, FeatureStoreWriter
    from diffusion_link.data import AudioDataModule, DemoAudioCaps
    from diffusion_link.data.audio import load_audio

    work = Path(tempfile.mkdtemp(prefix="dl-bench-"))
    source = DemoAudioCaps(str(work / "demo"), n_train=args.clips, n_val=0, n_test=0)
    records = source.records("train")
    module = CacheModule()
    encoder = module.encoder

    waves = [load_audio(r.audio) for r in records]
    encoder.encode_audio(waves[:2])  # warm-up
    start = time.perf_counter()
    for i in range(0, len(waves), args.shard_size):
        encoder.encode_audio(waves[i : i + args.shard_size])
        encoder.encode_text([c for r in records[i : i + args.shard_size] for c in r.captions])
    raw = len(waves) / (time.perf_counter() - start)

    class Stopwatch(L.Callback):  # Lightning's Timer callback does not time the predict stage
        def on_predict_start(self, trainer, pl_module):
            self.start = time.perf_counter()

        def on_predict_end(self, trainer, pl_module):
            self.seconds = time.perf_counter() - self.start

    timer = Stopwatch()
    trainer = L.Trainer(
        accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, callbacks=[FeatureStoreWriter(root=str(work / "stores"), name="bench"), timer]
    )
    data = AudioDataModule(source, splits=["train"], shard_size=args.shard_size, num_workers=args.workers)
    trainer.predict(module, datamodule=data, return_predictions=False)
    cached = len(records) / timer.seconds

    print(f"clips: {len(records)}  shard size: {args.shard_size}  decode workers: {args.workers}  torch threads: {__import__('torch').get_num_threads()}")
    print(f"raw CLAP forward (audio + captions): {raw:7.2f} clips/s")
    print(f"cache stage (decode + encode + write): {cached:7.2f} clips/s")
    ratio = cached / raw
    print(f"ratio: {ratio:.1%}   bound: >= 80%   {'PASS' if ratio >= 0.8 else 'FAIL'}")


if __name__ == "__main__":
    main()
