"""The steps of a recipe: each one ordinary ``diffusion-link`` command (a stage of the LightningCLI, or a
report command), with the folder it writes (``--run_dir``) and the steps whose outputs it reads.

The folders under a recipe's ``run_dir`` (with several seeds, the per-seed folders are under
``seed-<s>/``)::

    encoder/            export/, test/scores.json              (when the recipe trains its encoder)
    stores/<name>       the feature store (a link to <name>-<checksum>/)
    bridge/<row>/       export/, checkpoints/, logs/            one per bridge row (gap: null: the rows a captioner reads)
    bridge/report/      gap_report.{csv,md}, figures            the gap analysis (a recipe's gap_report names another)
    bridge/ablations/   <setting>-<value>/, sweep_<setting>.{png,csv}
    caption/<cap>/      export/, checkpoints/, logs/, test/<row>/{scores.json,predictions.csv}
    seeds/              gap_report_seeds.{csv,md}, caption_seeds.{csv,md}   (several seeds)
    report/index.html   the run's page;  logs/NN-<step>.log;  .steps/<step>.json (what made each output)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from diffusion_link.run.recipe import FITTED, RETRAINED, Recipe


@dataclass
class Step:
    name: str
    kind: str  # a recipe.STEP_KINDS kind, or "seeds" / "caption-seeds" / "sweep-plot" (report commands)
    command: list[str]  # the diffusion-link command line, without the program name
    run_dir: Path
    deps: list[str] = field(default_factory=list)  # names of the steps whose outputs it reads
    configs: list[str] = field(default_factory=list)
    outputs: list[Path] = field(default_factory=list)  # what a finished step leaves (checked before reuse)

    @property
    def fits(self) -> bool:
        return self.command[0] == "fit"

    @property
    def slug(self) -> str:
        return "-".join("".join(c if c.isalnum() else " " for c in self.name.lower()).split())


def _arg(key: str, value: Any) -> str:
    """``--key=value``, the value in the JSON/YAML form jsonargparse reads (strings as they are). A null
    inside a nested settings object (``model.init_args.captioner.lora.target_modules``) goes as the
    object ``--model.init_args.captioner={"lora": {"target_modules": null}}``: jsonargparse reads a dotted
    null there as the text 'None' (the other fields keep their values)."""
    parts = key.split(".")
    if value is None and len(parts) >= 4:
        nested: Any = None
        for part in reversed(parts[3:]):
            nested = {part: nested}
        return f"--{'.'.join(parts[:3])}={json.dumps(nested)}"
    if isinstance(value, str):
        return f"--{key}={value}"
    return f"--{key}={json.dumps(value)}"


def _flatten(prefix: str, value: Any) -> dict[str, Any]:
    if isinstance(value, dict) and value and "class_path" not in value:
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(f"{prefix}.{k}", v))
        return out
    return {prefix: value}


def flat(options: dict[str, Any]) -> dict[str, Any]:
    """A recipe's ``args`` as ``--key.path=value`` options: nested mappings become dotted keys (a mapping
    with a ``class_path`` stays one value)."""
    out: dict[str, Any] = {}
    for key, value in options.items():
        out.update(_flatten(key, value))
    return out


def store_name(cache_config: str) -> str:
    """The feature store's name, as the cache config's FeatureStoreWriter sets it (default ``store``)."""
    config = yaml.safe_load(Path(cache_config).read_text()) or {}
    for callback in (config.get("trainer") or {}).get("callbacks") or []:
        if isinstance(callback, dict) and str(callback.get("class_path", "")).endswith("FeatureStoreWriter"):
            return (callback.get("init_args") or {}).get("name", "store")
    return "store"


def demo_manifest_path(recipe: Recipe) -> Path | None:
    """The demo's manifest.json (each clip's animals) when the recipe's data is the embedded demo, else None."""
    source = recipe.data
    if source is None:
        config = yaml.safe_load(Path(recipe.cache).read_text()) or {}
        source = ((config.get("data") or {}).get("init_args") or {}).get("source")
    if not isinstance(source, dict) or not str(source.get("class_path", "")).endswith("DemoAudioCaps"):
        return None
    return Path((source.get("init_args") or {}).get("root", "data/demo")) / "manifest.json"


class StepBuilder:
    def __init__(self, recipe: Recipe):
        self.recipe = recipe
        self.steps: list[Step] = []

    def add(self, name: str, kind: str, subcommand: str, configs: list[str], run_dir: Path, args: dict[str, Any], deps: list[str], outputs: list[Path]) -> Step:
        settings = self.recipe.steps.get(kind)
        merged: dict[str, Any] = {}
        trainer = {**self.recipe.trainer, **(settings.trainer if settings else {})}
        if subcommand in ("fit", "validate", "test", "predict"):
            merged.update(_flatten("trainer", trainer) if trainer else {})
        merged.update(args)
        merged.update(flat(settings.args) if settings else {})
        command = [subcommand] + [a for c in configs for a in ("--config", c)]
        if subcommand in ("fit", "validate", "test", "predict"):
            command.append(_arg("run_dir", str(run_dir)))
        command += [_arg(key, value) for key, value in merged.items()]
        step = Step(name, kind, command, run_dir, deps, list(configs), outputs)
        self.steps.append(step)
        return step


def _trained_bridges(recipe: Recipe) -> set[str]:
    """The bridge rows the recipe trains: every row when it has a gap analysis (the rows of the gap table)
    or no captioner; without a gap analysis (``gap=null``, the captioning seeds), only the rows a
    captioner reads (its training bridge, ``train_through``, a test's bridge) and ``compare_to`` (whose
    export the captioning tests record), so that a captioning-only run does not train the gap table's
    ablations."""
    keys = {row.key for row in recipe.bridges}
    if recipe.gap or not recipe.captioners:
        return keys
    used = {recipe.compare_to} if recipe.compare_to else set()
    for cap in recipe.captioners:
        used |= {cap.bridge, (cap.train_through or {}).get("bridge"), *(t.bridge for t in cap.tests)}
    return keys & used


def recipe_steps(recipe: Recipe) -> list[Step]:
    """Every step of the recipe, in an order that respects what each reads."""
    b = StepBuilder(recipe)
    root = recipe.run_dir
    source = {"data.init_args.source": recipe.data} if recipe.data else {}
    cache_deps, cache_args = [], dict(source)
    if recipe.encoder_train:
        enc = root / "encoder"
        fit = b.add("encoder: fit", "encoder-fit", "fit", [recipe.encoder_train], enc, dict(source), [], [enc / "export" / "config.json"])
        b.add(
            "encoder: test",
            "encoder-test",
            "test",
            [recipe.encoder_train],
            enc,
            {**source, "model.init_args.pretrained": str(enc / "export"), "model.init_args.audio": None, "model.init_args.text": None},
            [fit.name],
            [enc / "test" / "scores.json"],
        )
        cache_deps, cache_args = [fit.name], {**cache_args, "model.init_args.encoder_export": str(enc / "export")}
    elif recipe.clap is not None:
        cache_args["model.init_args.encoder_export"] = None
        cache_args.update({f"model.init_args.encoder.{k}": v for k, v in recipe.clap.items()})
    store = root / "stores" / store_name(recipe.cache)
    cache = b.add("cache: features", "cache", "predict", [recipe.cache], root / "stores", cache_args, cache_deps, [store / "store.json"])
    many = len(recipe.seeds) > 1
    trained = _trained_bridges(recipe)
    gap_reports = []
    for seed in recipe.seeds:
        base = root / f"seed-{seed}" if many else root
        tag = f" (seed {seed})" if many else ""
        common = {"seed_everything": seed, "data.init_args.store": str(store)}
        exports, bridge_steps = {}, {}
        for row in recipe.bridges:
            folder = base / "bridge" / row.key
            exports[row.key] = folder / "export"
            if row.key not in trained:
                continue
            args = {**common, "model.init_args.name": row.name, **flat(row.args)}
            bridge_steps[row.key] = b.add(
                f"bridge: {row.name}{tag}", "bridge", "fit", row.config, folder, args, [cache.name], [folder / "export" / "config.json"]
            ).name
        if recipe.gap and recipe.bridges:
            main, *others = recipe.bridges
            gap_args = {
                **common,
                "model.init_args.name": main.name,
                "model.init_args.pretrained": str(exports[main.key]),
                "model.init_args.compare": {r.name: str(exports[r.key]) for r in others},
                **({"model.init_args.compare_to": [recipe.bridge(recipe.compare_to).name]} if recipe.compare_to else {}),
            }
            report = base / "bridge" / recipe.gap_report
            own = ""
            if recipe.gap_report != "report":  # its own folder and record, beside the base recipe's (report: the test's default)
                own, gap_args = f" ({recipe.gap_report})", {**gap_args, "model.init_args.report_dir": str(report)}
            b.add(
                f"gap: modality-gap analysis{own}{tag}",
                "gap",
                "test",
                [recipe.gap],
                base / "bridge",
                gap_args,
                [cache.name, *bridge_steps.values()],
                [report / "gap_report.csv"],
            )
            gap_reports.append(report)
            for setting, values in recipe.sweeps.items():
                folders = []
                for value in values:
                    folder = base / "bridge" / "ablations" / f"{setting}-{value}"
                    args = {
                        **gap_args,
                        "data.init_args.test_split": recipe.sweep_split,
                        "model.init_args.sampling": {setting: value},
                        "model.init_args.report_dir": str(folder),
                        "trainer.logger": False,
                    }
                    deps = [cache.name, *bridge_steps.values()]
                    if setting in RETRAINED:  # the main bridge retrained with the value, then compared on the sweep's split
                        train = folder / "bridge"
                        fit_args = {**common, "model.init_args.name": main.name, **flat(main.args), RETRAINED[setting]: value}
                        outputs = [train / "export" / "config.json"]
                        fit = b.add(f"sweep: fit {setting} = {value}{tag}", "bridge", "fit", main.config, train, fit_args, [cache.name], outputs)
                        del args["model.init_args.sampling"]
                        args["model.init_args.pretrained"] = str(train / "export")
                        deps.append(fit.name)
                    name = f"sweep: {setting} = {value}{tag}"
                    b.add(name, "sweep", "test", [recipe.gap], folder, args, deps, [folder / "gap_report.csv"])
                    folders.append((name, folder))
                out = base / "bridge" / "ablations"
                b.steps.append(
                    Step(
                        f"sweep: plot {setting}{tag}",
                        "sweep-plot",
                        ["sweep", *map(str, (f for _, f in folders)), "--out", str(out)],
                        out,
                        [n for n, _ in folders],
                        [],
                        [out / f"sweep_{setting}.png"],
                    )
                )
        for cap in recipe.captioners:
            folder = base / "caption" / cap.key
            train_bridge = {"model.init_args.bridge": str(exports[cap.bridge]) if cap.bridge else None}
            deps = [cache.name] + ([bridge_steps[cap.bridge]] if cap.bridge else [])
            if cap.train_through:  # Diffusion Bridge's captioner: its training texts go through a bridge row's chain
                train_bridge["model.init_args.train_through"] = {**cap.train_through, "bridge": str(exports[cap.train_through["bridge"]])}
                deps += [bridge_steps[cap.train_through["bridge"]]] if bridge_steps[cap.train_through["bridge"]] not in deps else []
            fit = b.add(
                f"caption: fit {cap.key}{tag}",
                "caption-fit",
                "fit",
                cap.config,
                folder,
                {**common, **train_bridge, **flat(cap.args)},
                deps,
                [folder / "export" / "config.json"],
            )
            if cap.tests:  # one test run makes all of this captioner's rows (one LLM load, one METEOR scorer)
                rows, test_deps = {}, [cache.name, fit.name]
                for test in cap.tests:
                    bridged = test.bridge not in (None, *FITTED)
                    rows[test.key] = {"name": test.name, "bridge": str(exports[test.bridge]) if bridged else test.bridge, "input": test.input}
                    test_deps += [bridge_steps[test.bridge]] if bridged and bridge_steps[test.bridge] not in test_deps else []
                # the captioner's own bridge as in its fit (a config's default path must not be loaded); the rows say what each test feeds
                args = {**common, **train_bridge, **flat(cap.args), "model.init_args.pretrained": str(folder / "export"), "model.init_args.rows": rows}
                args.update(flat(cap.test_args))  # its test's own options (caption_samples), which leave its fit's command as it was
                if recipe.compare_to:  # every row is also paired with its setting's row through that bridge (report/versus.py)
                    args["model.init_args.compare_to"] = str(exports[recipe.compare_to])
                    test_deps += [bridge_steps[recipe.compare_to]] if bridge_steps[recipe.compare_to] not in test_deps else []
                outputs = [folder / "test" / key / "scores.json" for key in rows]
                b.add(
                    f"caption: test {cap.key} ({len(rows)} row{'s' * (len(rows) > 1)}){tag}",
                    "caption-test",
                    "test",
                    cap.config,
                    folder,
                    args,
                    test_deps,
                    outputs,
                )
    caption_tests = [s for s in b.steps if s.kind == "caption-test"]
    if many and caption_tests:
        out = root / "seeds"
        manifest = demo_manifest_path(recipe)
        b.steps.append(
            Step(
                "seeds: captioning table across seeds",
                "caption-seeds",
                ["caption-seeds", *(str(root / f"seed-{s}" / "caption") for s in recipe.seeds), "--out", str(out)]
                + (["--manifest", str(manifest)] if manifest else []),
                out,
                [s.name for s in caption_tests],
                [],
                [out / "caption_seeds.md"],
            )
        )
    if many and gap_reports:
        out = root / "seeds"
        gap_names = [s.name for s in b.steps if s.kind == "gap"]
        b.steps.append(
            Step(
                "seeds: gap table across seeds",
                "seeds",
                ["seeds", *map(str, gap_reports), "--out", str(out)],
                out,
                gap_names,
                [],
                [out / "gap_report_seeds.md"],
            )
        )
    return b.steps
