"""Writes a feature store the way an outside tool would: pyarrow + JSON, none of our code.

Usage: python tests/data/independent_store.py OUT_DIR [ROWS] [DIM]
It follows docs/feature-store.md and nothing else.
"""

import json
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa


def write(out: Path, rows: int = 7, dim: int = 16, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    for split, refs in (("train", 1), ("test", 5)):
        n = rows if split == "train" else max(1, rows // 2)
        audio = rng.standard_normal((n, dim)).astype(np.float32)
        table = pa.table(
            {
                "clip_id": [f"{split}{i}" for i in range(n)],
                "audio_embedding": [a.tolist() for a in audio],
                "captions": [[f"caption {k} of {split}{i}" for k in range(refs)] for i in range(n)],
                "text_embeddings": [rng.standard_normal((refs, dim)).astype(np.float32).tolist() for _ in range(n)],
            }
        )
        folder = out / split
        folder.mkdir(exist_ok=True)
        # the layout of datasets.Dataset.save_to_disk: Arrow stream file + state.json (+ dataset_info.json)
        with pa.OSFile(str(folder / "data-00000-of-00001.arrow"), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as w:
            w.write_table(table)
        (folder / "state.json").write_text(
            json.dumps(
                {
                    "_data_files": [{"filename": "data-00000-of-00001.arrow"}],
                    "_fingerprint": f"independent-{split}",
                    "_format_columns": None,
                    "_format_kwargs": {},
                    "_format_type": None,
                    "_output_all_columns": False,
                    "_split": None,
                }
            )
        )
        (folder / "dataset_info.json").write_text(json.dumps({}))
    (out / "store.json").write_text(
        json.dumps(
            {
                "format_version": 1,
                "dim": dim,
                "status": "complete",
                "encoder": {"family": "other-tool", "weights": "n/a", "dim": dim},
                "data": {"source": "script"},
                "checksum": "independent",
            }
        )
    )
    return out


if __name__ == "__main__":
    write(Path(sys.argv[1]), *(int(x) for x in sys.argv[2:4]))
