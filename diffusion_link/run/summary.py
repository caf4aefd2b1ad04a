"""What a run prints at its end: the encoder, the gap table, the captioning table, examples, each step's
time and where everything is. Read from the files the steps wrote (the same files the report page reads)."""

from __future__ import annotations

import csv
import json
from pathlib import Path


from diffusion_link.evaluation.degenerate import collapsed_rows, recall_flags
from diffusion_link.evaluation.report import read_gap_report
from diffusion_link.run.recipe import Recipe
from diffusion_link.run.steps import Step, demo_manifest_path

#: figures the project commits to on 2 cores (minutes), by step name
BOUNDS_MIN = {"encoder: fit": 4.0}
DEMO_BOUND_MIN = 20.0


def demo_manifest(recipe: Recipe) -> dict | None:
    """The demo's clip list (animals per clip) when the recipe's data is the embedded demo, else None."""
    manifest = demo_manifest_path(recipe)
    return json.loads(manifest.read_text()).get("clips") if manifest is not None and manifest.is_file() else None


def caption_table(folders: list[Path], clip_info: dict | None) -> str:
    """Markdown of the report page's captioning table; on the demo, also how often each system names
    exactly the right animals (all clips / single-animal clips) and how many distinct captions it gives.
    Every row is compared with its setting's raw-audio row on the same clips (a paired bootstrap interval;
    ** when it excludes 0), then a table of every per-clip metric's paired difference, the rows flagged
    (a captioner that ignores its input) and the legend."""
    from diffusion_link.report import caption_table_rows, read_system
    from diffusion_link.report.tables import named_rows

    systems = [s for s in (read_system(folder) for folder in folders) if s is not None]
    if not systems:
        return ""
    table = caption_table_rows(systems, clip_info)

    def bold(text: str, flag: bool) -> str:
        return f"**{text}**" if flag and text else text

    animals, named = table["animal_headers"], table.get("named")  # {setting: its compare_to row}: one column for every setting
    extra = ["CIDEr-D vs compare_to row", *(["right animals vs compare_to row"] if animals else [])] if named else []
    lines = [
        "| setting | system | " + " | ".join(table["headers"]) + " | CIDEr-D vs raw [paired 95 %] (relative) | " + " | ".join(animals + extra) + " |",
        "|---|---|" + "---:|" * (len(table["headers"]) + 1 + len(animals) + len(extra)),
    ]
    flagged = []
    for row in table["rows"]:
        cells = [*row["cells"], bold(row["versus"], row["bold"])]
        if animals:
            cells += [*row["animals"][:-1], bold(row["animals"][-1], row["animals_bold"])]
        if named:  # compare_to: the setting's row through that bridge (report/versus.py)
            n = row["named"] or {}
            cells += [bold(n.get("versus", ""), n.get("bold", False))] + ([bold(n.get("animals", ""), n.get("animals_bold", False))] if animals else [])
        name = row["system"] + (" (ignores its input)" if row["flags"] else "")
        flagged += [f"  {row['setting']} / {row['system']}: {flag}" for flag in row["flags"]]
        lines.append(f"| {row['setting']} | {name} | " + " | ".join(cells) + " |")
    paired = [r for r in table["rows"] if any(c["text"] for c in r["paired"])]
    if paired:
        lines += ["", "Paired differences with the setting's raw-audio row (same clips, same resamples; ** excludes 0):"]
        lines += ["| setting | system | " + " | ".join(table["paired_headers"]) + " |", "|---|---|" + "---:|" * len(table["paired_headers"])]
        lines += [f"| {r['setting']} | {r['system']} | " + " | ".join(bold(c["text"], c["bold"]) for c in r["paired"]) + " |" for r in paired]
    versus = [r for r in table["rows"] if r["named"] and any(c["text"] for c in r["named"]["paired"])]
    if versus:
        lines += ["", f"Paired differences with the setting's compare_to row ({named_rows(named)}; same clips, same resamples; ** excludes 0):"]
        lines += ["| setting | system | " + " | ".join(table["paired_headers"]) + " |", "|---|---|" + "---:|" * len(table["paired_headers"])]
        lines += [f"| {r['setting']} | {r['system']} | " + " | ".join(bold(c["text"], c["bold"]) for c in r["named"]["paired"]) + " |" for r in versus]
    if flagged:
        lines += ["", "WARNING, degenerate results:", *flagged]
    lines += ["", *table["warnings"], *(f"  {note}" for note in table["notes"])]
    return "\n".join(lines)


def _predictions(folder: Path) -> dict[str, dict]:
    with open(folder / "predictions.csv", encoding="utf-8") as f:
        return {r["clip_id"]: r for r in csv.DictReader(f)}


def examples(systems: list[tuple[str, Path]], n: int = 5) -> str:
    tables = {label: _predictions(folder) for label, folder in systems if (folder / "predictions.csv").is_file()}
    if not tables:
        return ""
    first = next(iter(tables.values()))
    lines = []
    for clip in list(first)[:: max(1, len(first) // n)][:n]:
        lines.append(f"  {clip}")
        lines.append(f"    reference:        {json.loads(first[clip]['references'])[0]}")
        for label, table in tables.items():
            lines.append(f"    {label[:24] + ':':25} {table[clip]['candidate'] or '(empty)'}")
    return "\n".join(lines)


def encoder_lines(store: dict, encoder_test: Path | None) -> list[str]:
    enc = store.get("encoder") or {}
    if not enc:
        return []
    if enc.get("family") != "trained-contrastive":
        lines = [f"Encoder: laion-clap {enc.get('amodel')}, weights {enc.get('weights')}"]
        if str(enc.get("weights")).startswith("random-init"):
            lines.append("CLAP is randomly initialised (no checkpoint given): the numbers below test the machinery, not the method.")
        return lines
    trained = enc.get("trained_on") or {}
    lines = [
        f"Encoder: a CLAP-style contrastive encoder trained by this run on its training split only "
        f"({trained.get('source', '?')} '{trained.get('train_split', 'train')}', selected on '{trained.get('val_split', 'val')}'),",
        f"  audio {str(enc.get('amodel')).split('(')[0]} (log-mel CNN), text {enc.get('tmodel')}; weights {str(enc['weights'])[:23]}...",
    ]
    if encoder_test is not None and encoder_test.is_file():
        s = json.loads(encoder_test.read_text())["scores"]
        lines.append(
            f"  test split: audio->text R@1 {s['test/a2t_R@1']:.3f}, text->audio R@1 {s['test/t2a_R@1']:.3f} "
            f"(chance {s['test/chance_R@1']:.3f}), paired cosine {s['test/paired_cosine']:.3f}, "
            f"modality probe {s['test/probe_accuracy']:.3f} (0.5 = no gap)"
        )
        lines += [f"  WARNING, degenerate result: {flag}" for flag in recall_flags(s)]
    return lines


def step_times(records: list[tuple[Step, dict]]) -> str:
    lines, total = [], 0.0
    for i, (step, record) in enumerate(records, 1):
        seconds = record.get("seconds")
        if seconds is None:
            lines.append(f"  [{i:2d}] {step.name}")
            continue
        total += seconds
        bound = f"  (bound: <= {BOUNDS_MIN[step.name]:.0f} min)" if step.name in BOUNDS_MIN else ""
        resumed = "  (resumed: the time after the restart)" if record.get("resumed") else ""
        lines.append(f"  [{i:2d}] {step.name:55} {seconds / 60:5.1f} min{bound}{resumed}  log: {record.get('log', '')}")
    lines.append(f"  all steps, from scratch: {total / 60:.1f} min   (the demo's bound: <= {DEMO_BOUND_MIN:.0f} min on 2 cores, plus the one-off venv install)")
    return "\n".join(lines)


def summary(recipe: Recipe, steps: list[Step], records: list[dict], seconds: float) -> str:
    root = recipe.run_dir
    parts = [f"\n{'=' * 100}", f"{recipe.path} finished in {seconds / 60:.1f} min."]
    cache = next((s for s in steps if s.kind == "cache"), None)
    if cache is not None and cache.outputs[0].is_file():
        test = next((s.outputs[0] for s in steps if s.kind == "encoder-test"), None)
        parts += encoder_lines(json.loads(cache.outputs[0].read_text()), test)
    for step in steps:
        if step.kind == "gap" and (md := step.outputs[0].with_suffix(".md")).is_file():
            sections = md.read_text().split("\n\n")
            parts += ["", f"Modality gap ({md}):", sections[0]]
            for title, table in zip(sections, sections[1:]):  # compare_to: each row's paired difference from that row
                parts += ["", title, table] if "(compare_to;" in title else []
            parts += [f"WARNING, degenerate result: {w}" for w in collapsed_rows(read_gap_report(step.outputs[0]))]
        if step.kind in ("seeds", "caption-seeds") and step.outputs[0].is_file():
            parts += ["", f"Across seeds ({step.outputs[0]}):", step.outputs[0].read_text().strip()]
    tests = [s for s in steps if s.kind == "caption-test"]
    clip_info = demo_manifest(recipe)
    # one table per seed: a seed's rows are paired with that seed's raw-audio row, never another seed's
    groups = [(f" (seed {seed})", [s for s in tests if f"seed-{seed}" in s.run_dir.parts]) for seed in recipe.seeds] if len(recipe.seeds) > 1 else [("", tests)]
    shown_examples = False
    for tag, group in groups:
        table = caption_table([o.parent for s in group for o in s.outputs], clip_info)
        if not table:
            continue
        parts += [
            "",
            f"Captioning, test split{tag} (aac-metrics; scores.json has the clip list and decoding settings;",
            *(
                ["'right animals': the caption names exactly the clip's animals ('vs raw': in points); 'distinct': distinct captions / animal combinations;"]
                if clip_info
                else []
            ),
            "±: half-width of a 95 % bootstrap interval over clips, every metric: docs/method.md):",
            table,
        ]
        ex = examples([(json.loads(o.read_text())["name"], o.parent) for s in group for o in s.outputs if o.is_file()][:4])
        if ex and not shown_examples:
            parts += ["", f"Example captions{tag}:", ex]
            shown_examples = True
    parts += ["", "Step times (the time of the run that made each output):", step_times(list(zip(steps, records)))]
    parts += [
        "",
        "Where things are (docs/recipes.md lists every folder):",
        f"  report page        {(root / 'report' / 'index.html').resolve()}  (tables, figures, every test clip to listen to)",
        f"  feature store      {cache.outputs[0].parent.resolve() if cache else '-'}",
        f"  bridges            {root}/bridge/<row>/export  (DiffusionLink.from_pretrained); gap report in {root}/bridge/{recipe.gap_report}",
        f"  captioners         {root}/caption/<captioner>/export; each test row's scores.json and predictions.csv in <captioner>/test/<row>",
        f"  step logs          {root}/logs/  (everything each step printed), TensorBoard: tensorboard --logdir {root}",
        "=" * 100,
    ]
    return "\n".join(parts)
