"""``diffusion-link demo``: the whole chain on the embedded demo data, each step one ordinary
``diffusion-link`` command, and a summary at the end.

cache -> Diffusion-Link, Diffusion Bridge, two ablations -> gap analysis -> zero-shot captioner
(tested on raw and bridged audio) -> supervised captioners (raw and bridged) -> tables and examples.

A step is skipped when its outputs exist and were made from the same inputs (its command, the
content of its config files, and the identity of what it reads: the store's checksum, the
bridge's and captioner's exports) — recorded in ``artifacts/.stamps``. The cache stage keys its
own store by checksum, so a second run recomputes nothing.
"""

from __future__ import annotations

import argparse
import csv
import gc
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

ART = Path("artifacts")
STORE = ART / "stores" / "demo"
BRIDGES = {
    "Diffusion-Link": ("configs/bridge/demo.yaml", None, ART / "bridge/diffusion-link/export"),
    "Diffusion Bridge": ("configs/bridge/demo.yaml", "configs/bridge/variants/diffusion-bridge.yaml", ART / "bridge/diffusion-bridge/export"),
    "w/o cross-sample loss": ("configs/bridge/demo.yaml", "configs/bridge/variants/no-cross.yaml", ART / "bridge/no-cross/export"),
    "w/o topology loss": ("configs/bridge/demo.yaml", "configs/bridge/variants/no-topology.yaml", ART / "bridge/no-topology/export"),
}
DL_EXPORT = BRIDGES["Diffusion-Link"][2]
CAPTION = ART / "caption"


@dataclass
class Step:
    name: str
    args: list[str]
    outputs: list[Path]
    inputs: list[Path] = field(default_factory=list)
    always: bool = False  # run every time (the cache stage reuses its store by itself)

    def key(self) -> str:
        digest = hashlib.sha256(json.dumps(self.args).encode())
        for i, arg in enumerate(self.args):
            if self.args[i - 1] == "--config" and Path(arg).is_file():
                digest.update(Path(arg).read_bytes())
        for path in self.inputs:
            digest.update(path.read_bytes() if path.is_file() else b"<missing>")
        return digest.hexdigest()[:16]

    def stamp(self) -> Path:
        return ART / ".stamps" / ("".join(c if c.isalnum() else "-" for c in self.name) + ".json")

    def fresh(self) -> bool:
        stamp = self.stamp()
        return (not self.always and stamp.is_file() and json.loads(stamp.read_text()).get("key") == self.key()
                and all(p.exists() for p in self.outputs))


def _caption_steps() -> list[Step]:
    store_meta = STORE / "store.json"
    dl_meta = DL_EXPORT / "config.json"
    zs, sup_raw, sup_dl = CAPTION / "zero-shot", CAPTION / "supervised-raw", CAPTION / "supervised-diffusion-link"

    def fit(name, config, folder, extra, inputs):
        return Step(name, ["fit", "--config", config, "--model.init_args.export_dir", str(folder / "export"),
                           "--trainer.default_root_dir", str(folder), "--trainer.logger.init_args.save_dir", str(folder), *extra],
                    [folder / "export" / "config.json"], inputs)

    def test(name, config, folder, out, system, bridge, inputs):
        return Step(name, ["test", "--config", config, "--model.init_args.pretrained", str(folder / "export"),
                           "--model.init_args.bridge", str(bridge) if bridge else "null",
                           "--model.init_args.output_dir", str(out), "--model.init_args.name", system],
                    [out / "scores.json"], inputs + [folder / "export" / "config.json"])

    zero, sup = "configs/caption/zero-shot.yaml", "configs/caption/supervised.yaml"
    return [
        fit("caption: zero-shot fit (text only)", zero, zs, [], [store_meta]),
        test("caption: zero-shot test, raw audio", zero, zs, zs / "raw", "zero-shot, raw audio", None, [store_meta]),
        test("caption: zero-shot test, Diffusion-Link", zero, zs, zs / "diffusion-link", "zero-shot + Diffusion-Link", DL_EXPORT, [store_meta, dl_meta]),
        fit("caption: supervised fit, raw audio", sup, sup_raw, ["--model.init_args.bridge", "null"], [store_meta]),
        test("caption: supervised test, raw audio", sup, sup_raw, sup_raw / "test", "supervised, raw audio", None, [store_meta]),
        fit("caption: supervised fit, Diffusion-Link", sup, sup_dl, ["--model.init_args.bridge", str(DL_EXPORT)], [store_meta, dl_meta]),
        test("caption: supervised test, Diffusion-Link", sup, sup_dl, sup_dl / "test", "supervised + Diffusion-Link", DL_EXPORT, [store_meta, dl_meta]),
    ]


def demo_steps(clap_checkpoint: str | None = None) -> list[Step]:
    cache_args = ["predict", "--config", "configs/cache/demo.yaml"]
    if clap_checkpoint:
        cache_args += ["--model.init_args.encoder.checkpoint", clap_checkpoint]
    steps = [Step("cache: CLAP features of the demo", cache_args, [STORE / "store.json"], always=True)]
    for name, (config, variant, export) in BRIDGES.items():
        args = ["fit", "--config", config] + (["--config", variant] if variant else [])
        steps.append(Step(f"bridge: {name}", args, [export / "config.json"], [STORE / "store.json"]))
    steps.append(Step("bridge: modality-gap analysis", ["test", "--config", "configs/bridge/gap-demo.yaml"],
                      [ART / "bridge/report/gap_report.md"], [STORE / "store.json"] + [e / "config.json" for _, _, e in BRIDGES.values()]))
    return steps + _caption_steps()


def run(steps: list[Step]) -> None:
    from diffusion_link.cli import main as cli

    for i, step in enumerate(steps, 1):
        if step.fresh():
            print(f"[{i}/{len(steps)}] {step.name}: up to date, reused", flush=True)
            continue
        print(f"\n[{i}/{len(steps)}] {step.name}\n    diffusion-link {' '.join(step.args)}", flush=True)
        start = time.time()
        cli(step.args)
        gc.collect()
        step.stamp().parent.mkdir(parents=True, exist_ok=True)
        step.stamp().write_text(json.dumps({"key": step.key(), "seconds": round(time.time() - start, 1)}))


# -- the summary -----------------------------------------------------------------------------------

CAPTION_METRICS = [("bleu_1", "BLEU-1"), ("bleu_4", "BLEU-4"), ("meteor", "METEOR"), ("rouge_l", "ROUGE-L"), ("cider_d", "CIDEr-D"),
                   ("spice", "SPICE"), ("spider", "SPIDEr"), ("fense", "FENSE")]
PAIRS = [("zero-shot", CAPTION / "zero-shot/raw", CAPTION / "zero-shot/diffusion-link"),
         ("supervised", CAPTION / "supervised-raw/test", CAPTION / "supervised-diffusion-link/test")]


def caption_table() -> str:
    lines = []
    for setting, raw_dir, dl_dir in PAIRS:
        if not (raw_dir / "scores.json").is_file() or not (dl_dir / "scores.json").is_file():
            continue
        raw, dl = (json.loads((d / "scores.json").read_text())["scores"] for d in (raw_dir, dl_dir))
        keys = [(k, t) for k, t in CAPTION_METRICS if k in raw and k in dl]
        if not lines:
            lines += ["| setting | system | " + " | ".join(t for _, t in keys) + " |", "|---|---|" + "---:|" * len(keys)]
        lines.append(f"| {setting} | raw audio (baseline) | " + " | ".join(f"{raw[k]:.4f}" for k, _ in keys) + " |")
        lines.append(f"| {setting} | + Diffusion-Link | " + " | ".join(f"{dl[k]:.4f}" for k, _ in keys) + " |")
        rel = [f"{(dl[k] - raw[k]) / raw[k]:+.1%}" if raw[k] else "n/a" for k, _ in keys]
        lines.append(f"| {setting} | relative change | " + " | ".join(rel) + " |")
    return "\n".join(lines)


def examples(n: int = 4) -> str:
    systems = [("zero-shot, raw", CAPTION / "zero-shot/raw"), ("zero-shot + D-L", CAPTION / "zero-shot/diffusion-link"),
               ("supervised + D-L", CAPTION / "supervised-diffusion-link/test")]
    tables = {}
    for label, folder in systems:
        if (folder / "predictions.csv").is_file():
            with open(folder / "predictions.csv", encoding="utf-8") as f:
                tables[label] = {r["clip_id"]: r for r in csv.DictReader(f)}
    if not tables:
        return ""
    first = next(iter(tables.values()))
    lines = []
    for clip in list(first)[:: max(1, len(first) // n)][:n]:
        lines.append(f"  {clip}")
        lines.append(f"    reference:        {json.loads(first[clip]['references'])[0]}")
        for label, table in tables.items():
            lines.append(f"    {label + ':':17} {table[clip]['candidate'] or '(empty)'}")
    return "\n".join(lines)


def summary(seconds: float) -> str:
    store = json.loads((STORE / "store.json").read_text())
    weights = store["encoder"]["weights"]
    parts = [f"\n{'=' * 100}", f"Diffusion-Link demo finished in {seconds / 60:.1f} min.   CLAP weights: {weights}"]
    if weights.startswith("random-init"):
        parts.append("CLAP is randomly initialised (no checkpoint given): every stage ran for real, but the embeddings say nothing\n"
                     "about sound, so the numbers below test the machinery, not the method. See README: 'What the demo's numbers mean'.")
    gap = ART / "bridge/report/gap_report.md"
    if gap.is_file():
        parts += ["", "Modality gap, demo test split (artifacts/bridge/report/gap_report.md):", gap.read_text().split("\n\n")[0]]
    table = caption_table()
    if table:
        parts += ["", "Captioning, demo test split (aac-metrics; scores.json has the clip list and decoding settings):", table]
    ex = examples()
    if ex:
        parts += ["", "Example captions:", ex]
    parts += ["", "Where things are:",
              f"  feature store      {STORE.resolve()}",
              "  gap report         artifacts/bridge/report/gap_report.{csv,md}",
              "  figures            artifacts/bridge/report/gap_pca.png, artifacts/bridge/report/gap_cosine_hist.png",
              "  bridges (export)   artifacts/bridge/*/export  (DiffusionLink.from_pretrained)",
              "  captioners         artifacts/caption/*/export (peft adapter + projector), */test/predictions.csv, scores.json",
              "=" * 100]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="diffusion-link demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clap-checkpoint", help="a real laion-clap checkpoint (e.g. 630k-audioset-best.pt) instead of random init")
    parser.add_argument("--summary-only", action="store_true", help="print the summary of the last run")
    args = parser.parse_args(argv)
    start = time.time()
    if not args.summary_only:
        run(demo_steps(args.clap_checkpoint))
    print(summary(time.time() - start), flush=True)
    return 0
