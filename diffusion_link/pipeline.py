"""``diffusion-link demo``: the whole chain on the embedded demo data, each step one ordinary
``diffusion-link`` command, and a summary at the end.

encoder (a small CLAP-style model trained on the demo's training split, selected on val) -> cache ->
Diffusion-Link, Diffusion Bridge, two ablations -> gap analysis -> zero-shot captioner (tested on raw
audio, mean shift, Diffusion Bridge, Diffusion-Link and, as a ceiling, text embeddings) -> supervised
captioners (raw and bridged) -> tables and examples. With ``--clap-checkpoint`` the encoder step is
skipped and laion-clap with those weights makes the features.

A step is skipped when its outputs exist and were made from the same inputs (its command, the
content of its config files, and the identity of what it reads: the store's checksum, the
bridge's and captioner's exports) — recorded in ``artifacts/.stamps``. The cache stage keys its
own store by checksum, so a second run recomputes nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from diffusion_link.data.demo import animal_accuracy

ART = Path("artifacts")
STORE = ART / "stores" / "demo"
ENCODER = ART / "encoder" / "demo"
DEMO_ROOT = Path("data/demo")
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
        return not self.always and stamp.is_file() and json.loads(stamp.read_text()).get("key") == self.key() and all(p.exists() for p in self.outputs)


ZERO_SHOT_TESTS = [  # (system name, folder under zero-shot/, bridge, test input)
    ("zero-shot, raw audio", "raw", None, "audio"),
    ("zero-shot + mean shift", "mean-shift", "mean-shift", "audio"),
    ("zero-shot + Diffusion Bridge", "diffusion-bridge", BRIDGES["Diffusion Bridge"][2], "audio"),
    ("zero-shot + Diffusion-Link", "diffusion-link", DL_EXPORT, "audio"),
    ("zero-shot, text embedding (ceiling)", "text-ceiling", None, "text"),
]
ZS, SUP_RAW, SUP_DL = CAPTION / "zero-shot", CAPTION / "supervised-raw", CAPTION / "supervised-diffusion-link"
SUPERVISED_TESTS = [("supervised, raw audio", SUP_RAW), ("supervised + Diffusion-Link", SUP_DL)]


def _caption_steps() -> list[Step]:
    store_meta = STORE / "store.json"

    def fit(name, config, folder, extra, inputs):
        return Step(
            name,
            [
                "fit",
                "--config",
                config,
                "--model.init_args.export_dir",
                str(folder / "export"),
                "--trainer.default_root_dir",
                str(folder),
                "--trainer.logger.init_args.save_dir",
                str(folder),
                *extra,
            ],
            [folder / "export" / "config.json"],
            inputs,
        )

    def test(config, folder, out, system, bridge, test_input="audio"):
        inputs = [store_meta, folder / "export" / "config.json"]
        inputs += [Path(bridge) / "config.json"] if bridge and bridge != "mean-shift" else []
        return Step(
            f"caption: {system}",
            [
                "test",
                "--config",
                config,
                "--model.init_args.pretrained",
                str(folder / "export"),
                "--model.init_args.bridge",
                str(bridge) if bridge else "null",
                "--model.init_args.test_input",
                test_input,
                "--model.init_args.output_dir",
                str(out),
                "--model.init_args.name",
                system,
            ],
            [out / "scores.json"],
            inputs,
        )

    zero, sup = "configs/caption/zero-shot.yaml", "configs/caption/supervised.yaml"
    steps = [fit("caption: zero-shot fit (text only)", zero, ZS, [], [store_meta])]
    steps += [test(zero, ZS, ZS / sub, system, bridge, test_input) for system, sub, bridge, test_input in ZERO_SHOT_TESTS]
    return steps + [
        fit("caption: supervised fit, raw audio", sup, SUP_RAW, ["--model.init_args.bridge", "null"], [store_meta]),
        test(sup, SUP_RAW, SUP_RAW / "test", "supervised, raw audio", None),
        fit("caption: supervised fit, Diffusion-Link", sup, SUP_DL, ["--model.init_args.bridge", str(DL_EXPORT)], [store_meta, DL_EXPORT / "config.json"]),
        test(sup, SUP_DL, SUP_DL / "test", "supervised + Diffusion-Link", DL_EXPORT),
    ]


def demo_steps(clap_checkpoint: str | None = None) -> list[Step]:
    cache_args = ["predict", "--config", "configs/cache/demo.yaml"]
    steps = []
    if clap_checkpoint:
        cache_args += ["--model.init_args.encoder_export", "null", "--model.init_args.encoder.checkpoint", clap_checkpoint]
    else:
        export = ENCODER / "export"
        steps += [
            Step("encoder: train on the demo's training split", ["fit", "--config", "configs/encoder/demo.yaml"], [export / "config.json"]),
            Step(
                "encoder: retrieval and gap on the test split",
                [
                    "test",
                    "--config",
                    "configs/encoder/demo.yaml",
                    "--model.init_args.pretrained",
                    str(export),
                    "--model.init_args.audio",
                    "null",
                    "--model.init_args.text",
                    "null",
                ],
                [ENCODER / "test" / "scores.json"],
                [export / "config.json"],
            ),
        ]
    steps.append(Step("cache: features of the demo", cache_args, [STORE / "store.json"], always=True))
    for name, (config, variant, export) in BRIDGES.items():
        args = ["fit", "--config", config] + (["--config", variant] if variant else [])
        steps.append(Step(f"bridge: {name}", args, [export / "config.json"], [STORE / "store.json"]))
    steps.append(
        Step(
            "bridge: modality-gap analysis",
            ["test", "--config", "configs/bridge/gap-demo.yaml"],
            [ART / "bridge/report/gap_report.md"],
            [STORE / "store.json"] + [e / "config.json" for _, _, e in BRIDGES.values()],
        )
    )
    return steps + _caption_steps()


class Interrupted(RuntimeError):
    """The demo was stopped by a signal; the step named was not finished (nor stamped)."""


LOGS = ART / "logs"


def step_log(i: int, step: Step) -> Path:
    """The file that keeps everything step ``i`` printed (Lightning's messages, warnings, tracebacks)."""
    slug = "-".join("".join(c if c.isalnum() else " " for c in step.name).split())
    return LOGS / f"{i:02d}-{slug}.log"


@contextlib.contextmanager
def _output_to(path: Path):
    """Send this process's stdout and stderr (file descriptors 1 and 2: Python, Lightning, warnings and
    native libraries alike) to ``path``; yield a stream to the real console."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    console = os.fdopen(os.dup(saved[1]), "w", buffering=1)
    streams = sys.stdout, sys.stderr
    with open(path, "w", encoding="utf-8", buffering=1) as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        sys.stdout = sys.stderr = log  # also when sys.stdout is not file descriptor 1 (an IDE, pytest)
        try:
            yield console
        finally:
            sys.stdout, sys.stderr = streams
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            console.close()


def run(steps: list[Step]) -> None:
    """Each step in order, one console line each (a progress bar while it runs, then its time); what a
    step prints goes to its log file (:func:`step_log`)."""
    import signal
    import traceback

    from diffusion_link.lightning_cli import StepProgress
    from diffusion_link.lightning_cli import run as cli

    received: list[int] = []
    # Lightning chains to a handler that is already installed: it stops training cleanly (nothing
    # half-trained is exported) and we learn of the signal here, instead of going on to the next step.
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
    width = max(len(s.name) for s in steps) + 9
    try:
        for i, step in enumerate(steps, 1):
            label = f"[{i:2d}/{len(steps)}] {step.name}"
            if step.fresh():
                print(f"{label:{width}}  up to date, reused", flush=True)
                continue
            log, start = step_log(i, step), time.time()
            with _output_to(log) as console:
                print(f"$ diffusion-link {' '.join(step.args)}", flush=True)
                try:
                    cli(step.args, callbacks=[StepProgress(label, console)], trim_memory=False)
                except BaseException:
                    traceback.print_exc()
                    console.write(f"{label:{width}}  FAILED after {time.time() - start:.0f} s; what it printed: {log}\n")
                    raise
            if received:
                raise Interrupted(
                    f"stopped by signal {received[0]} during step {i}/{len(steps)} ({step.name}); "
                    f"finished steps are kept, run `diffusion-link demo` again to go on (log: {log})"
                )
            seconds = time.time() - start
            step.stamp().parent.mkdir(parents=True, exist_ok=True)
            step.stamp().write_text(json.dumps({"key": step.key(), "seconds": round(seconds, 1), "log": str(log)}))
            print(f"{label:{width}}  {seconds / 60:5.1f} min", flush=True)
    finally:
        signal.signal(signal.SIGTERM, previous)


# -- the summary -----------------------------------------------------------------------------------


def caption_systems() -> list[tuple[str, str, Path]]:
    """(setting, system, folder with scores.json and predictions.csv), in table order."""
    rows = [("zero-shot", system, ZS / sub) for system, sub, _, _ in ZERO_SHOT_TESTS]
    return rows + [("supervised", system, folder / "test") for system, folder in SUPERVISED_TESTS]


def _predictions(folder: Path) -> dict[str, dict]:
    with open(folder / "predictions.csv", encoding="utf-8") as f:
        return {r["clip_id"]: r for r in csv.DictReader(f)}


def caption_table(clip_info: dict[str, dict] | None = None) -> str:
    """Markdown of the report page's captioning table; with the demo's clip list, also how often each
    system names exactly the right animals (all clips / single-animal clips) and how many distinct
    captions it gives."""
    from diffusion_link.report import caption_table_rows, read_system

    systems = [s for s in (read_system(folder) for _, _, folder in caption_systems()) if s is not None]
    if not systems:
        return ""
    table = caption_table_rows(systems)
    animals = ["right animals", "right (single)", "distinct"] if clip_info else []
    lines = [
        "| setting | system | " + " | ".join(table["headers"]) + " | CIDEr-D vs raw | " + " | ".join(animals) + " |",
        "|---|---|" + "---:|" * (len(table["headers"]) + 1 + len(animals)),
    ]
    for system, row in zip(systems, table["rows"]):
        cells = [*row["cells"], row["versus"]]
        if clip_info:
            acc = animal_accuracy({c: r["candidate"] for c, r in system.rows.items()}, clip_info)
            cells += [f"{acc['exact_animals_all']:.0%}", f"{acc['exact_animals_single']:.0%}", f"{acc['distinct_captions']} / {acc['distinct_combinations']}"]
        lines.append(f"| {row['setting']} | {row['system']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def examples(n: int = 5) -> str:
    systems = [
        ("zero-shot, raw", CAPTION / "zero-shot/raw"),
        ("zero-shot + D-L", CAPTION / "zero-shot/diffusion-link"),
        ("text (ceiling)", CAPTION / "zero-shot/text-ceiling"),
        ("supervised + D-L", CAPTION / "supervised-diffusion-link/test"),
    ]
    tables = {label: _predictions(folder) for label, folder in systems if (folder / "predictions.csv").is_file()}
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


def encoder_line(store: dict) -> list[str]:
    enc = store["encoder"]
    if enc.get("family") != "trained-contrastive":
        lines = [f"Encoder: laion-clap {enc.get('amodel')}, weights {enc['weights']}"]
        if str(enc["weights"]).startswith("random-init"):
            lines.append("CLAP is randomly initialised (no checkpoint given): the numbers below test the machinery, not the method.")
        return lines
    trained = enc.get("trained_on") or {}
    lines = [
        f"Encoder: a CLAP-style contrastive encoder trained by this demo on its training split only "
        f"({trained.get('source', '?')} '{trained.get('train_split', 'train')}', selected on '{trained.get('val_split', 'val')}'),",
        f"  audio {str(enc.get('amodel')).split('(')[0]} (log-mel CNN), text {enc.get('tmodel')}; weights {str(enc['weights'])[:23]}...",
    ]
    test = ENCODER / "test" / "scores.json"
    if test.is_file():
        s = json.loads(test.read_text())["scores"]
        lines.append(
            f"  test split: audio->text R@1 {s['test/a2t_R@1']:.3f}, text->audio R@1 {s['test/t2a_R@1']:.3f} "
            f"(chance {s['test/chance_R@1']:.3f}), paired cosine {s['test/paired_cosine']:.3f}, "
            f"modality probe {s['test/probe_accuracy']:.3f} (0.5 = no gap)"
        )
    return lines


BOUNDS_MIN = {"encoder: train on the demo's training split": 4.0}  # figures the project commits to (2 cores)
DEMO_BOUND_MIN = 20.0


def step_times(steps: list[Step]) -> str:
    lines, total = [], 0.0
    for i, step in enumerate(steps, 1):
        stamp = step.stamp()
        record = json.loads(stamp.read_text()) if stamp.is_file() else {}
        seconds = record.get("seconds")
        if seconds is None:
            lines.append(f"  [{i:2d}] {step.name}")
            continue
        total += seconds
        bound = f"  (bound: <= {BOUNDS_MIN[step.name]:.0f} min)" if step.name in BOUNDS_MIN else ""
        log = f"  log: {record['log']}" if record.get("log") else ""
        lines.append(f"  [{i:2d}] {step.name:55} {seconds / 60:5.1f} min{bound}{log}")
    lines.append(f"  all steps, from scratch: {total / 60:.1f} min   (bound: <= {DEMO_BOUND_MIN:.0f} min on 2 cores, plus the one-off venv install)")
    return "\n".join(lines)


def summary(seconds: float, steps: list[Step] | None = None) -> str:
    store = json.loads((STORE / "store.json").read_text())
    parts = [f"\n{'=' * 100}", f"Diffusion-Link demo finished in {seconds / 60:.1f} min.", *encoder_line(store)]
    gap = ART / "bridge/report/gap_report.md"
    if gap.is_file():
        parts += ["", "Modality gap, demo test split (artifacts/bridge/report/gap_report.md):", gap.read_text().split("\n\n")[0]]
    manifest = DEMO_ROOT / "manifest.json"  # configs/*/demo.yaml build the demo there
    clip_info = json.loads(manifest.read_text()).get("clips") if manifest.is_file() else None
    table = caption_table(clip_info)
    if table:
        parts += [
            "",
            "Captioning, demo test split (aac-metrics; scores.json has the clip list and decoding settings;",
            "'right animals': the caption names exactly the clip's animals; 'distinct': distinct captions / animal combinations;",
            "±: half-width of a 95 % bootstrap interval over clips, every metric: docs/method.md):",
            table,
        ]
    ex = examples()
    if ex:
        parts += ["", "Example captions:", ex]
    if steps:
        parts += ["", "Step times (the time of the run that made each output):", step_times(steps)]
    parts += [
        "",
        "Where things are:",
        f"  report page        {(ART / 'report' / 'index.html').resolve()}  (tables, figures, every test clip to listen to)",
        f"  encoder (export)   {ENCODER / 'export'}  (ContrastiveEncoder.from_pretrained), test scores in {ENCODER / 'test'}",
        f"  feature store      {STORE.resolve()}",
        "  gap report         artifacts/bridge/report/gap_report.{csv,md}",
        "  figures            artifacts/bridge/report/gap_pca.png, artifacts/bridge/report/gap_cosine_hist.png",
        "  bridges (export)   artifacts/bridge/*/export  (DiffusionLink.from_pretrained)",
        "  captioners         artifacts/caption/*/export (peft adapter + projector), */predictions.csv, scores.json",
        f"  step logs          {LOGS}/  (everything each step printed), TensorBoard: tensorboard --logdir {ART}",
        "=" * 100,
    ]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="diffusion-link demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--clap-checkpoint",
        help="a real laion-clap checkpoint (e.g. 630k-audioset-best.pt): the features then come from it, and the demo trains no encoder of its own",
    )
    parser.add_argument("--summary-only", action="store_true", help="print the summary of the last run")
    args = parser.parse_args(argv)
    start = time.time()
    steps = demo_steps(args.clap_checkpoint)
    if not args.summary_only:
        try:
            run(steps)
        except Interrupted as err:
            print(f"\nDemo interrupted: {err}", flush=True)
            return 143
        from diffusion_link.report.page import build_report

        build_report(ART)  # the page a person reads and listens to (cheap: always rebuilt)
    print(summary(time.time() - start, steps), flush=True)
    return 0
