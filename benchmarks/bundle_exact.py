"""Issue figure: does a bundle caption the test clips exactly as the run's own test row did?

    python benchmarks/bundle_exact.py RUN_DIR [--out DIR] [--captioner zero-shot] [--bridge diffusion-link] [--device cpu]

Makes the bundle (``diffusion-link bundle RUN_DIR --out DIR/bundle``), copies it to a temporary folder,
and in a fresh Python process that sees only that copy (its working folder the temporary one) captions
the test row's clips (their files: the row's feature store's ``audio.csv``) through ``AudioCaptioner``.
Prints N/M captions identical to the row's ``predictions.csv`` and each one that differs; writes
``DIR/bundle_exact.json``; exits 1 when any differs. Nothing of the run is changed or deleted.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def row_captions(run: Path, bundle: Path) -> tuple[dict[str, str], dict[str, str]]:
    """The bundle's test row's captions by clip id, and each clip's audio file (from the row's store)."""
    config = json.loads((bundle / "config.json").read_text())
    row = run / "caption" / config["made_from"]["captioner_key"] / "test" / config["test_row"]
    with open(row / "predictions.csv", encoding="utf-8") as f:
        captions = {r["clip_id"]: r["candidate"] for r in csv.DictReader(f)}
    store = Path(json.loads((row / "scores.json").read_text())["store"])
    if not store.is_absolute():
        store = next((p for p in (run.parent / store, run / store, Path.cwd() / store) if p.is_dir()), store)
    with open(store / "audio.csv", encoding="utf-8") as f:
        files = {r["clip_id"]: r["path"] for r in csv.DictReader(f) if r["clip_id"] in captions}
    missing = sorted(set(captions) - set(files))
    if missing:
        raise SystemExit(f"{store}/audio.csv has no file for {len(missing)} of the row's clips (e.g. {missing[0]})")
    return captions, files


CAPTION = """
import json, sys
from diffusion_link import AudioCaptioner
captioner = AudioCaptioner.from_pretrained(sys.argv[1], device=sys.argv[2])
files = json.loads(open(sys.argv[3]).read())
print(json.dumps(list(captioner(files))))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a finished run's folder (the demo's: artifacts)")
    parser.add_argument("--out", type=Path, default=Path("artifacts/bundle-exact"), help="where the bundle and the summary go")
    parser.add_argument("--captioner", default="zero-shot")
    parser.add_argument("--bridge", default="diffusion-link")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    bundle = args.out / "bundle"
    if bundle.exists():
        shutil.rmtree(bundle)  # our own output from an earlier run of this script
    cmd = [sys.executable, "-m", "diffusion_link", "bundle", str(args.run), "--out", str(bundle), "--captioner", args.captioner, "--bridge", args.bridge]
    subprocess.run(cmd, check=True, env=env)
    expected, files = row_captions(args.run, bundle)
    clips = sorted(expected)
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "bundle"
        shutil.copytree(bundle, copy)
        (Path(tmp) / "files.json").write_text(json.dumps([files[c] for c in clips]))
        done = subprocess.run(
            [sys.executable, "-c", CAPTION, str(copy), args.device, str(Path(tmp) / "files.json")], cwd=tmp, env=env, capture_output=True, text=True
        )
        if done.returncode:
            sys.stderr.write(done.stderr[-4000:])
            return done.returncode
        got = json.loads(done.stdout.strip().splitlines()[-1])
    differ = [{"clip_id": c, "row": expected[c], "api": g} for c, g in zip(clips, got) if g != expected[c]]
    summary = {"run": str(args.run), "clips": len(clips), "identical": len(clips) - len(differ), "differ": differ}
    (args.out / "bundle_exact.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False))
    print(f"{summary['identical']}/{len(clips)} captions identical to the row's ({bundle}, copied and loaded in a fresh process)")
    for d in differ:
        print(f"  {d['clip_id']}: row {d['row']!r} | api {d['api']!r}")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
