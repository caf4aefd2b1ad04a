"""Issue figure: peak memory of one training epoch over a 1,000-row and a 100,000-row store.

    python benchmarks/store_memory.py [--dim 512] [--batch-size 256]

Synthetic rows in the documented store format (written with pyarrow, one caption per row).
Each epoch runs in a fresh process through FeatureDataModule.train_dataloader(). Reported:

* anonymous memory (RssAnon, sampled every batch): what the process itself allocated; the bound
  (difference < 100 MB) applies to it;
* peak resident set (VmHWM): includes the store's memory-mapped pages, which the kernel maps in as
  they are read and may drop at any time (page cache, not the process's memory).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path


def write_store(out: Path, rows: int, dim: int, chunk: int = 10_000) -> Path:
    """A store of ``rows`` random rows, written in chunks through the store's own streaming writer."""
    import numpy as np
    import pyarrow as pa

    from diffusion_link.data.store import features, store_header, write_split

    schema = features(dim).arrow_schema
    rng = np.random.default_rng(0)

    def batches():
        for start in range(0, rows, chunk):
            n = min(chunk, rows - start)
            vectors = lambda: pa.FixedSizeListArray.from_arrays(pa.array(rng.standard_normal(n * dim, dtype=np.float32)), dim)  # noqa: E731
            offsets = pa.array(np.arange(n + 1, dtype=np.int32))
            yield pa.record_batch(
                [
                    pa.array([f"clip{start + i:07d}" for i in range(n)]),
                    vectors(),
                    pa.ListArray.from_arrays(offsets, pa.array([f"caption {start + i}" for i in range(n)])),
                    pa.ListArray.from_arrays(offsets, vectors()),
                ],
                schema=schema,
            )

    write_split(out / "train", batches(), dim)
    header = store_header(dim, {"family": "synthetic"}, {"source": "benchmark", "rows": rows})
    (out / "store.json").write_text(json.dumps({**header, "status": "complete"}))
    return out


EPOCH = r"""
import sys, json, resource
def status(key):
    for line in open('/proc/self/status'):
        if line.startswith(key):
            return int(line.split()[1]) / 1024
from diffusion_link.data.datamodules import FeatureDataModule
dm = FeatureDataModule(sys.argv[1], batch_size=int(sys.argv[2]))
base = status('RssAnon:')
loader = dm.train_dataloader()
peak_anon, n = base, 0
for batch in loader:
    n += len(batch['clip_id'])
    peak_anon = max(peak_anon, status('RssAnon:'))
print(json.dumps({'pairs': n, 'base_anon': base, 'peak_anon': peak_anon, 'hwm': status('VmHWM:')}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dl-mem-"))
    results = {}
    for rows in (1_000, 100_000):
        store = write_store(work / f"s{rows}", rows, args.dim)
        out = subprocess.run([sys.executable, "-c", EPOCH, str(store), str(args.batch_size)], capture_output=True, text=True, check=True)
        results[rows] = json.loads(out.stdout.strip().splitlines()[-1])
        r = results[rows]
        print(f"{rows:>7} rows: {r['pairs']:>7} pairs/epoch  peak anonymous {r['peak_anon']:7.1f} MB  peak RSS incl. mmap {r['hwm']:7.1f} MB")
    diff = results[100_000]["peak_anon"] - results[1_000]["peak_anon"]
    print(f"difference in peak anonymous memory: {diff:.1f} MB   bound: < 100 MB   {'PASS' if diff < 100 else 'FAIL'}")
    print(
        f"(difference in peak RSS incl. memory-mapped store pages: {results[100_000]['hwm'] - results[1_000]['hwm']:.1f} MB; "
        f"the 100,000-row store is {sum(f.stat().st_size for f in (work / 's100000').rglob('*.arrow')) / 2**20:.0f} MB on disk)"
    )


if __name__ == "__main__":
    main()
