"""The report page at AudioCaps scale: build time, page size, and how fast it answers in a browser.

    python benchmarks/report_page.py [--clips 5000] [--systems 8]

A synthetic run laid out as the stages write it (store.json + audio.csv, one scores.json +
predictions.csv per captioning system, a gap report), with a tiny audio file per clip inside the run
(linked, as AudioCaps clips under data/ are). Reported: the build time, the HTML size, and in headless
Chromium (when installed) the time until the page is interactive and the time one filter takes over
every clip. Bounds (ours, for a page a person uses): build < 30 s, first page < 3 s, a filter < 1 s.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def synthetic_run(root: Path, clips: int, systems: int) -> Path:
    import numpy as np
    import soundfile as sf

    from diffusion_link.evaluation.report import COLUMNS, write_gap_report
    from diffusion_link.files import write_json

    rng = np.random.default_rng(0)
    art, audio = root / "artifacts", root / "data" / "audio"
    audio.mkdir(parents=True)
    words = "a dog cat bird cow frog barks meows chirps moos croaks loudly while in the background then".split()
    sentence = lambda: " ".join(rng.choice(words, rng.integers(3, 10))).capitalize()  # noqa: E731
    ids = [f"clip{i:05d}_0" for i in range(clips)]
    refs = {c: [sentence() for _ in range(5)] for c in ids}
    tone = (0.1 * np.sin(np.arange(1600) / 3)).astype(np.float32)
    for c in ids:
        sf.write(audio / f"{c}.flac", tone, 16000)
    store = art / "stores" / "bench"
    store.mkdir(parents=True)
    write_json(store / "store.json", {"checksum": "bench", "encoder": {"family": "laion-clap", "weights": "synthetic"}, "rows": {"test": clips}})
    with open(store / "audio.csv", "w", newline="") as f:
        csv.writer(f).writerows([["clip_id", "split", "path"], *([c, "test", str((audio / f"{c}.flac").resolve())] for c in ids)])
    for s in range(systems):
        out = art / "caption" / f"system-{s}"
        out.mkdir(parents=True)
        cider = rng.random(clips) * 2
        (out / "scores.json").write_text(
            json.dumps({"name": f"system {s}", "mode": "zero-shot", "store": str(store), "scores": {"cider_d": float(cider.mean())}})
        )
        with open(out / "predictions.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["clip_id", "candidate", "references", "cider_d"])
            w.writerows([c, sentence(), json.dumps(refs[c]), f"{v:.4f}"] for c, v in zip(ids, cider))
    write_gap_report({m: {k: 0.5 for k, _ in COLUMNS} for m in ("none (raw audio)", "Diffusion-Link")}, art / "bridge" / "report")
    return art


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=5000)
    parser.add_argument("--systems", type=int, default=8)
    args = parser.parse_args()
    from diffusion_link.report import build_report

    with tempfile.TemporaryDirectory() as tmp:
        art = synthetic_run(Path(tmp), args.clips, args.systems)
        start = time.perf_counter()
        page = build_report(art)
        build = time.perf_counter() - start
        print(f"clips {args.clips}, systems {args.systems}")
        print(f"build     {build:7.2f} s        (bound: < 30 s)")
        print(f"page      {page.stat().st_size / 1e6:7.1f} MB")
        try:
            from test_report import _chromium
        except ImportError:  # pragma: no cover
            return
        try:
            browser = _chromium()
        except BaseException as err:  # pytest.skip outside pytest
            print(f"browser   not measured ({err})")
            return
        try:
            start = time.perf_counter()
            browser.get(page.resolve().as_uri())
            rows = browser.execute_script("return document.querySelectorAll('#clips tr.clip:not([hidden])').length")
            loaded = time.perf_counter() - start
            took = browser.execute_script(
                "const t = performance.now(); const e = document.getElementById('f-cider-min'); e.value = '1';"
                "e.dispatchEvent(new Event('input')); return [performance.now() - t, document.getElementById('page-info').textContent];"
            )
        finally:
            browser.quit()
        print(f"open      {loaded:7.2f} s        (bound: < 3 s; first page: {rows} rows)")
        print(f"filter    {took[0] / 1000:7.3f} s        (bound: < 1 s; CIDEr-D >= 1 over every clip:{took[1]})")


if __name__ == "__main__":
    main()
