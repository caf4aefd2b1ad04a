"""What ``run --dry-run`` checks before anything trains: the inputs a user gives (the data, the CLAP
checkpoint, its tokenizer, the captioners' LLM) and every sweep's settings. Each check is the real one
(the AudioCaps CSVs are read and their clips resolved with the name pattern), not a file-exists test."""

from __future__ import annotations

from pathlib import Path

import yaml

from diffusion_link.run.recipe import Recipe
from diffusion_link.run.steps import Step

EMBEDDED_LLMS = {"smollm2-135m-instruct", "tiny-gpt2"}


def _option(step: Step, key: str):
    """An option's value in a step: its command line first, then its configs (last wins), else None."""
    for arg in reversed(step.command):
        if arg.startswith(f"--{key}="):
            return yaml.safe_load(arg.split("=", 1)[1])
    value = None
    for config in step.configs:
        node = yaml.safe_load(Path(config).read_text()) or {}
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        value = node if node is not None else value
    return value


def _data(recipe: Recipe) -> list[tuple[bool, str]]:
    source = recipe.data
    if not source:
        return []
    kind = str(source.get("class_path", ""))
    init = source.get("init_args") or {}
    if kind.endswith("AudioCapsCSV"):
        from diffusion_link.data.audiocaps import AudioCapsCSV

        return AudioCapsCSV(**init).check()
    if kind.endswith(("AACDatasetsSource", "CaptionCorpus")):
        from diffusion_link.data import AACDatasetsSource, CaptionCorpus

        cls = AACDatasetsSource if kind.endswith("AACDatasetsSource") else CaptionCorpus
        return cls(**init).check()
    if kind.endswith("DemoAudioCaps"):
        return [(True, f"the demo's data: built in {init.get('root', 'data/demo')} on first use")]
    return [(True, f"data {kind}: not checked before the run (its cache step reports missing clips in failures.csv)")]


def _encoder(recipe: Recipe) -> list[tuple[bool, str]]:
    from diffusion_link import assets

    clap = recipe.clap
    if clap is None:
        return [(True, f"encoder: trained by the run ({recipe.encoder_train})")] if recipe.encoder_train else []
    out = []
    checkpoint, tokenizer = clap.get("checkpoint"), clap.get("tokenizer_path")
    if checkpoint is None:
        out.append((True, "CLAP: random-init (no checkpoint given: the numbers test the machinery, not the method)"))
    else:
        out.append((Path(checkpoint).is_file(), f"CLAP checkpoint {checkpoint}" + ("" if Path(checkpoint).is_file() else " does not exist (CLAP=PATH)")))
    if tokenizer:
        ok = Path(tokenizer).is_dir()
        out.append((ok, f"tokenizer {tokenizer}" + ("" if ok else " is not a folder (TOKENIZER=the roberta-base tokenizer's folder)")))
    elif checkpoint is not None:
        cached = assets.hf_cached_snapshot("roberta-base", "vocab.json")
        out.append(
            (cached is not None, f"roberta-base tokenizer: {cached}" if cached else "roberta-base tokenizer: not in the Hugging Face cache; give TOKENIZER=DIR")
        )
    return out


def _llms(steps: list[Step]) -> list[tuple[bool, str]]:
    from diffusion_link import assets

    out, seen = [], set()
    for step in steps:
        if step.kind != "caption-fit":
            continue
        llm = _option(step, "model.init_args.captioner.llm")
        if llm is None or llm in seen:
            continue
        seen.add(llm)
        if llm in EMBEDDED_LLMS:
            out.append((True, f"LLM {llm}: embedded (pip)"))
        elif Path(llm).is_dir():
            ok = (Path(llm) / "config.json").is_file()
            out.append((ok, f"LLM {llm}" + ("" if ok else " has no config.json (a transformers model folder)")))
        else:
            cached = assets.hf_cached_snapshot(llm, "config.json")
            out.append((cached is not None, f"LLM {llm}: {cached}" if cached else f"LLM {llm}: neither a folder nor in the Hugging Face cache (LLM=DIR)"))
    return out


def _sweeps(recipe: Recipe, steps: list[Step]) -> list[tuple[bool, str]]:
    if not recipe.sweeps:
        return []
    main = next(s for s in steps if s.kind == "bridge")
    timesteps = int(_option(main, "model.init_args.bridge.timesteps") or 1000)
    t_start = int(_option(main, "model.init_args.bridge.t_start") or 600)
    out = []
    for value in recipe.sweeps.get("t_start", []):
        ok = isinstance(value, int) and 0 < value <= timesteps
        out.append((ok, f"sweep t_start = {value}" + ("" if ok else f": must be an integer in 1..{timesteps} (the bridge's timesteps)")))
    for value in recipe.sweeps.get("steps", []):
        ok = isinstance(value, int) and 0 < value <= t_start
        out.append((ok, f"sweep steps = {value}" + ("" if ok else f": must be an integer in 1..{t_start} (the bridge's t_start)")))
    return out


def check_inputs(recipe: Recipe, steps: list[Step]) -> list[tuple[bool, str]]:
    """Every check, (ok, what was found or what is wrong and what to do)."""
    return [*_data(recipe), *_encoder(recipe), *_llms(steps), *_sweeps(recipe, steps)]
