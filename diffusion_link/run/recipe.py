"""A recipe: one YAML file that describes a whole run of the chain, read into plain dataclasses.

    run_dir: artifacts                 # everything the run writes goes under it
    vars: {CLAP: null, DEVICES: 1}     # NAME=value on the command line overrides; ${NAME} anywhere in a string
    data: {class_path: ..., init_args: ...}   # the audio source (the cache and encoder stages read it)
    trainer: {devices: ${DEVICES}}     # trainer settings for every step (devices, strategy, precision, num_nodes)
    encoder: {train: configs/encoder/demo.yaml}   # or {clap: {checkpoint: ${CLAP}, tokenizer_path: ...}}
    cache: configs/cache/demo.yaml
    bridges:                           # the rows of the gap table; the first is the main one
      diffusion-link: {name: Diffusion-Link, config: [configs/bridge/demo.yaml]}
    gap: configs/bridge/gap-demo.yaml
    captioners:                        # the captioners to train, each with the rows of the captioning table it makes
      zero-shot:
        config: configs/caption/zero-shot.yaml
        tests: {raw: {name: "zero-shot, raw audio"}, diffusion-link: {name: ..., bridge: diffusion-link}}
    seeds: [0]
    sweeps: {split: val, t_start: [200, 600], steps: [1, 5]}
    steps: {bridge: {args: {trainer.max_steps: 20}}}   # settings for every step of one kind
    extends: demo.yaml                 # start from another recipe (its folder's path), then merge this file in
    gap_report: report-baselines       # the gap analysis's folder under bridge/ (default report)
    compare_to: regressor              # a bridge row every row of both tables is also compared with (paired)

See docs/recipes.md for every key. Nothing here imports torch or Lightning: a recipe is read, checked and
turned into steps in a fraction of a second (``--dry-run``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

#: the kinds of step; ``steps.<kind>`` in a recipe sets options for every step of that kind
STEP_KINDS = ("encoder-fit", "encoder-test", "cache", "bridge", "gap", "sweep", "caption-fit", "caption-test")
#: settings a sweep retrains the main bridge for (its stage's option); t_start and steps are sampling only
RETRAINED = {"blocks": "model.init_args.bridge.blocks"}
MEAN_SHIFT = "mean-shift"  # a test row's bridge that is not trained: the training split's mean difference
PROJECTION = "projection-decoding"  # another: DeCap / DRCap's decoding over the training split's texts
FITTED = (MEAN_SHIFT, PROJECTION)
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class RecipeError(ValueError):
    """A recipe that cannot run: the message names the file, the key and what to do."""


@dataclass
class StepSettings:
    """Options for every step of one kind: ``trainer`` (merged into the trainer section), ``args``
    (any ``--key=value`` of the stage's command line, e.g. ``model.init_args.lr: 0.001``) and ``minutes``
    (what one such step is expected to take, measured where the recipe says; ``--dry-run`` prints it where
    no earlier run of the step left its own time)."""

    trainer: dict[str, Any] = field(default_factory=dict)
    args: dict[str, Any] = field(default_factory=dict)
    minutes: float | None = None


@dataclass
class BridgeRow:
    key: str  # folder name under <run_dir>/bridge/
    name: str  # the row's name in the gap table
    config: list[str]
    args: dict[str, Any] = field(default_factory=dict)


@dataclass
class CaptionTest:
    key: str  # folder name under the captioner's folder
    name: str  # the row's name in the captioning table
    bridge: str | None = None  # a bridge row's key, "mean-shift", "projection-decoding" or None (raw audio)
    input: str = "audio"  # or "text": the reference's text embedding (the ceiling)


@dataclass
class Captioner:
    key: str
    config: list[str]
    bridge: str | None = None  # supervised: the bridge its training audio goes through (a bridge row's key)
    tests: list[CaptionTest] = field(default_factory=list)
    args: dict[str, Any] = field(default_factory=dict)
    train_through: dict[str, Any] | None = None  # zero-shot: {bridge: a bridge row's key, t_start, steps} (Diffusion Bridge's captioner)
    test_args: dict[str, Any] = field(default_factory=dict)  # options of its test step only (model.init_args.caption_samples: 5)


@dataclass
class Recipe:
    path: Path
    run_dir: Path
    cache: str
    encoder_train: str | None = None
    clap: dict[str, Any] | None = None
    data: dict[str, Any] | None = None
    trainer: dict[str, Any] = field(default_factory=dict)
    bridges: list[BridgeRow] = field(default_factory=list)
    gap: str | None = None
    captioners: list[Captioner] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [0])
    sweeps: dict[str, list] = field(default_factory=dict)
    sweep_split: str = "val"
    steps: dict[str, StepSettings] = field(default_factory=dict)
    vars: dict[str, Any] = field(default_factory=dict)
    gap_report: str = "report"  # the gap analysis's folder under <run_dir>/bridge/ (and its step's name)
    compare_to: str | None = None  # a bridge row's key: both tables also pair every row with that row

    def bridge(self, key: str) -> BridgeRow:
        for row in self.bridges:
            if row.key == key:
                return row
        raise RecipeError(f"{self.path}: no bridge row '{key}' (bridges: {', '.join(r.key for r in self.bridges) or 'none'})")

    def config_files(self) -> list[str]:
        files = [self.cache, *([self.encoder_train] if self.encoder_train else []), *([self.gap] if self.gap else [])]
        files += [c for row in self.bridges for c in row.config] + [c for cap in self.captioners for c in cap.config]
        return files


def _substitute(value: Any, variables: dict[str, Any], where: str) -> Any:
    if isinstance(value, dict):
        return {k: _substitute(v, variables, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, variables, f"{where}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value
    names = _VAR.findall(value)
    for name in names:
        if name not in variables:
            raise RecipeError(f"{where} uses ${{{name}}}, which is not in the recipe's vars ({', '.join(sorted(variables)) or 'none'})")
    whole = _VAR.fullmatch(value)
    if whole:  # "${DEVICES}" keeps the variable's type (an int, null, a list)
        return variables[whole.group(1)]
    return _VAR.sub(lambda m: str(variables[m.group(1)]), value)


def _parse_value(text: str) -> Any:
    """A command-line value as YAML reads it (``2`` an int, ``null`` None, ``[0, 1]`` a list), else the text."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


#: the recipe's mappings of rows, from which ``null`` removes one (in an extending recipe or on the command line)
ROW_MAPPINGS = ("bridges", "captioners", "tests")


def apply_overrides(raw: dict, overrides: list[str], path: Path) -> dict:
    """``NAME=value`` sets a variable (upper-case names, the recipe's ``vars``); ``a.b.c=value`` sets a key of
    the recipe itself (``seeds=[0,1,2]``, ``steps.bridge.args.trainer.max_steps=50``); ``null`` for a row of
    ``bridges``, ``captioners`` or a captioner's ``tests`` removes it (``captioners.noise-injection=null``)."""
    raw = dict(raw)
    variables = dict(raw.get("vars") or {})
    for item in overrides:
        if "=" not in item:
            raise RecipeError(f"override '{item}' is not NAME=value (a variable such as CLAP=/path/x.pt) or key.path=value")
        key, _, text = item.partition("=")
        value = _parse_value(text)
        if key in variables or key.isupper():
            if key not in variables:
                raise RecipeError(f"{path} has no variable {key} (vars: {', '.join(sorted(variables)) or 'none'})")
            variables[key] = value
            continue
        node = raw
        parts = key.split(".")
        for part in parts[:-1]:
            node[part] = dict(node.get(part) or {})
            node = node[part]
        if value is None and len(parts) > 1 and parts[-2] in ROW_MAPPINGS:  # as in an extending recipe: drop the row
            node.pop(parts[-1], None)
        else:
            node[parts[-1]] = value
    raw["vars"] = variables
    return raw


def _list(value: Any) -> list:
    return [] if value is None else list(value) if isinstance(value, (list, tuple)) else [value]


def _settings(raw: dict, path: Path) -> dict[str, StepSettings]:
    out = {}
    for kind, value in (raw or {}).items():
        if kind not in STEP_KINDS:
            raise RecipeError(f"{path}: steps.{kind} is not a kind of step (kinds: {', '.join(STEP_KINDS)})")
        value = value or {}
        unknown = set(value) - {"trainer", "args", "minutes"}
        if unknown:
            raise RecipeError(f"{path}: steps.{kind} takes 'trainer', 'args' and 'minutes', not {sorted(unknown)}")
        minutes = value.get("minutes")
        if minutes is not None and (not isinstance(minutes, (int, float)) or minutes < 0):
            raise RecipeError(f"{path}: steps.{kind}.minutes is a number of minutes, not {minutes!r}")
        out[kind] = StepSettings(dict(value.get("trainer") or {}), dict(value.get("args") or {}), minutes)
    return out


KNOWN = {"run_dir", "vars", "data", "trainer", "encoder", "cache", "bridges", "gap", "captioners", "seeds", "sweeps", "steps", "description"}
KNOWN |= {"extends", "gap_report", "compare_to"}


def merge_recipes(base: dict, extension: dict) -> dict:
    """``extension`` over ``base``: mappings merge key by key (a bridge row or captioner test row added or
    overridden, a captioner's other settings kept), anything else (a list, a value) replaces. ``null`` for a
    key of one of the base's mappings removes it: ``bridges: {no-cross: null}`` over demo-baselines.yaml drops that row."""
    out = dict(base)
    for key, value in extension.items():
        if value is None and key in base and isinstance(base[key], dict):
            del out[key]
        else:
            out[key] = merge_recipes(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return out


def _read_raw(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    """A recipe file as a mapping, with ``extends`` resolved (a path relative to the file's folder, chains
    allowed). An extending recipe whose gap analysis would land in its base's folder gets its own,
    ``report-<file name>``, so that its gap table never overwrites the base's."""
    if not path.is_file():
        raise RecipeError(f"no recipe at {path} (the shipped ones: recipes/demo.yaml, recipes/demo-baselines.yaml, recipes/audiocaps.yaml, recipes/smoke.yaml)")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise RecipeError(f"{path} is not a mapping of recipe keys")
    unknown = set(raw) - KNOWN
    if unknown:
        raise RecipeError(f"{path}: unknown key(s) {sorted(unknown)}; a recipe takes {sorted(KNOWN)}")
    parent = raw.pop("extends", None)
    if parent is None:
        return raw
    if not isinstance(parent, str):
        raise RecipeError(f"{path}: extends is the path of one recipe (relative to {path.parent}), not {parent!r}")
    base_path = (path.parent / parent).resolve()
    if base_path in (*seen, path.resolve()):
        raise RecipeError(f"{path}: extends {parent}, which extends it back (a cycle: {' -> '.join(p.name for p in (*seen, path.resolve(), base_path))})")
    base = _read_raw(base_path, (*seen, path.resolve()))
    if "gap_report" not in raw and base.get("gap_report", "report") == "report":
        raw["gap_report"] = f"report-{path.stem}"
    return merge_recipes(base, raw)


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read, override and check a recipe. Errors name the file and the key."""
    path = Path(path)
    raw = apply_overrides(_read_raw(path), overrides or [], path)
    variables = raw.pop("vars")
    raw = _substitute(raw, variables, path.name)
    if not raw.get("cache"):
        raise RecipeError(f"{path}: 'cache' (the cache stage's config) is required")
    encoder = raw.get("encoder") or {}
    if unknown := sorted(set(encoder) - {"train", "clap"}):
        raise RecipeError(f"{path}: encoder takes train (a config: train one) and clap (laion-clap settings: a pretrained CLAP), not {unknown}")
    clap = encoder.get("clap")
    if clap is not None and not isinstance(clap, dict):
        raise RecipeError(f"{path}: encoder.clap is a mapping of laion-clap settings (checkpoint, amodel, tmodel, tokenizer_path, crop)")
    if encoder.get("train") and not (clap or {}).get("checkpoint"):
        clap = None  # a recipe that trains its encoder unless a CLAP checkpoint is given
    recipe = Recipe(
        path=path,
        run_dir=Path(raw.get("run_dir") or "artifacts"),
        cache=raw["cache"],
        encoder_train=encoder.get("train") if clap is None else None,
        clap=clap,
        data=raw.get("data"),
        trainer=dict(raw.get("trainer") or {}),
        gap=raw.get("gap"),
        seeds=[int(s) for s in _list(raw.get("seeds", [0]))],
        steps=_settings(raw.get("steps"), path),
        vars=variables,
        gap_report=str(raw.get("gap_report") or "report"),
    )
    if Path(recipe.gap_report).name != recipe.gap_report or recipe.gap_report in ("", ".", "..", "ablations"):
        raise RecipeError(f"{path}: gap_report is one folder name under bridge/ (e.g. report-baselines), not {recipe.gap_report!r}")
    if not recipe.seeds:
        raise RecipeError(f"{path}: seeds is empty; give at least one (seeds: [0])")
    for key, row in (raw.get("bridges") or {}).items():
        row = row or {}
        if not row.get("config"):
            raise RecipeError(f"{path}: bridges.{key} needs config (the bridge stage's YAML files, applied in order)")
        recipe.bridges.append(BridgeRow(str(key), str(row.get("name", key)), _list(row["config"]), dict(row.get("args") or {})))
    keys = {r.key for r in recipe.bridges}
    for key, cap in (raw.get("captioners") or {}).items():
        cap = cap or {}
        if not cap.get("config"):
            raise RecipeError(f"{path}: captioners.{key} needs config (the caption stage's YAML files)")
        tests = []
        for test_key, test in (cap.get("tests") or {}).items():
            test = test or {}
            bridge = test.get("bridge", cap.get("bridge"))
            if bridge not in (None, *FITTED) and bridge not in keys:
                raise RecipeError(
                    f"{path}: captioners.{key}.tests.{test_key}.bridge '{bridge}' is not a bridge row ({', '.join(keys) or 'none'}) nor {' or '.join(FITTED)}"
                )
            if test.get("input", "audio") not in ("audio", "text"):
                raise RecipeError(f"{path}: captioners.{key}.tests.{test_key}.input is 'audio' or 'text'")
            tests.append(CaptionTest(str(test_key), str(test.get("name", f"{key}, {test_key}")), bridge, test.get("input", "audio")))
        if cap.get("bridge") not in (None, *keys):
            raise RecipeError(f"{path}: captioners.{key}.bridge '{cap.get('bridge')}' is not a bridge row ({', '.join(keys) or 'none'})")
        through = cap.get("train_through")
        if through is not None and (not isinstance(through, dict) or through.get("bridge") not in keys or set(through) - {"bridge", "t_start", "steps"}):
            raise RecipeError(
                f"{path}: captioners.{key}.train_through is {{bridge: a bridge row's key ({', '.join(keys) or 'none'}), t_start, steps}}, not {through!r}"
            )
        test_args = cap.get("test_args") or {}
        if not isinstance(test_args, dict):
            raise RecipeError(f"{path}: captioners.{key}.test_args is a mapping of its test step's options (model.init_args.caption_samples: 5)")
        recipe.captioners.append(Captioner(str(key), _list(cap["config"]), cap.get("bridge"), tests, dict(cap.get("args") or {}), through, dict(test_args)))
    if (compare := raw.get("compare_to")) is not None:
        if compare not in keys:
            raise RecipeError(f"{path}: compare_to '{compare}' is not a bridge row; the rows: {', '.join(sorted(keys)) or 'none'}")
        recipe.compare_to = str(compare)
    sweeps = dict(raw.get("sweeps") or {})
    recipe.sweep_split = sweeps.pop("split", "val")
    for setting, values in sweeps.items():
        if setting not in ("t_start", "steps", *RETRAINED):
            raise RecipeError(
                f"{path}: sweeps.{setting}: the sampling settings t_start and steps and the retrained {', '.join(RETRAINED)} are swept "
                "(retrain other settings as bridge rows)"
            )
        if len(_list(values)) < 2:
            raise RecipeError(f"{path}: sweeps.{setting} needs at least two values to draw a curve (got {values!r})")
        recipe.sweeps[setting] = _list(values)
    if (recipe.gap or recipe.sweeps) and not recipe.bridges:
        raise RecipeError(f"{path}: gap and sweeps compare bridges; add at least one to 'bridges'")
    if recipe.sweeps and not recipe.gap:
        raise RecipeError(f"{path}: sweeps run the gap analysis's config; set 'gap'")
    for file in recipe.config_files():
        if not Path(file).is_file():
            raise RecipeError(f"{path}: config file {file} does not exist (paths are relative to the folder you run from: {Path.cwd()})")
    return recipe
