"""``diffusion-link bundle RUN_DIR --out DIR``: everything needed to caption, from a finished run, in one folder.

The layout (the Hugging Face Hub's: a ``config.json`` and ``*.safetensors`` per component, a top-level
``config.json`` that names them, a model card ``README.md``)::

    DIR/config.json        "format": "diffusion-link/bundle", the components (folder + sha256 of their
                           config.json), the decoding settings, what the test figures came from
    DIR/encoder/           the trained encoder's export, or a reference to the laion-clap checkpoint
                           (its settings and sha256: the checkpoint itself is not copied)
    DIR/bridge/            the bridge's export
    DIR/captioner/         the captioner's export: LoRA adapter + projector + the base LM's identity
                           (name, sha256 of its files), or with ``--merge`` the LoRA-merged LM itself
    DIR/reports/           the run's reports the card quotes (scores.json of the test row, the gap report)
    DIR/README.md          the model card

Each component is an export of :mod:`diffusion_link.export` (checked on every load);
:func:`diffusion_link.export.read_bundle` checks the whole. Nothing is downloaded.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

from diffusion_link.assets import sha256_file
from diffusion_link.export import BUNDLE_FORMAT, CLAP_REFERENCE, CONFIG, FORMAT_VERSION, RESERVED, ExportError, read_export
from diffusion_link.files import atomic_folder, write_atomic, write_json

log = logging.getLogger(__name__)
BRIDGE_WEIGHTS, ENCODER_WEIGHTS = "model.safetensors", "encoder.safetensors"  # bridge.model.WEIGHTS, encoder.contrastive.WEIGHTS (checked by a test)

DESCRIPTION = "Write one folder that holds everything needed to caption (encoder, bridge, captioner, decoding settings, model card) from a finished run."


def arguments(parser) -> None:
    parser.add_argument(
        "run_dir", help="a finished run's folder (the run_dir of `diffusion-link run RECIPE`: caption/<captioner>/export, bridge/<bridge>/export, ...)"
    )
    parser.add_argument("--out", required=True, help="the bundle's folder (replaced whole)")
    parser.add_argument("--captioner", default="zero-shot", help="which captioner of the run (its key under caption/); default zero-shot")
    parser.add_argument(
        "--bridge", default="diffusion-link", help="which bridge of the run (its key under bridge/), or `none` for raw audio; default diffusion-link"
    )
    parser.add_argument("--merge", action="store_true", help="write the LoRA-merged LM instead of the adapter (the bundle then needs no base LM)")


def main(args) -> int:
    out = bundle_run(args.run_dir, args.out, args.captioner, args.bridge, args.merge)
    print(f"Bundle: {out} (load it with `AudioCaptioner.from_pretrained({str(out)!r})`; its model card: {out / 'README.md'})")
    return 0


def bundle_run(run_dir: str | Path, out: str | Path, captioner: str = "zero-shot", bridge: str | None = "diffusion-link", merge: bool = False) -> Path:
    """The bundle of ``run_dir``'s ``captioner`` with its ``bridge`` (``None`` / ``"none"``: raw audio) at ``out``."""
    from diffusion_link.caption.model import DecodingOptions
    from diffusion_link.data.store import encoder_mismatch

    run = Path(run_dir)
    if not run.is_dir():
        raise FileNotFoundError(f"no run folder at {run}: pass the run_dir of a finished `diffusion-link run`")
    cap_export = run / "caption" / captioner / "export"
    cap_meta = read_export(cap_export, "captioner")
    bridge = None if bridge in (None, "none", "null") else bridge
    bridge_export = run / "bridge" / bridge / "export" if bridge else None
    if bridge_export is not None:
        bridge_meta = read_export(bridge_export, "bridge", required=(BRIDGE_WEIGHTS,))
        if diff := encoder_mismatch(cap_meta.get("encoder") or {}, bridge_meta.get("encoder") or {}):
            raise ExportError(f"{bridge_export} was trained on another encoder than the captioner {cap_export}: " + "; ".join(diff))
    if cap_meta.get("mode") == "supervised" and cap_meta.get("bridge") and (bridge_export is None or not _same_export(cap_meta["bridge"], bridge_export)):
        raise ExportError(f"the supervised captioner {cap_export} was trained through the bridge {cap_meta['bridge']}; bundle it with that bridge (--bridge)")
    row = find_test_row(run / "caption" / captioner / "test", bridge_export)
    decoding = row["scores"]["decoding"] if row else asdict(DecodingOptions())
    if row is None:
        log.warning(
            "no test row of %s captions audio through %s: the bundle uses the default decoding and its card has no test figures",
            captioner,
            bridge or "raw audio",
        )
    # the demo's own gap report, else a recipe's own (gap_report: e.g. bridge/report-baselines/)
    gaps = [run / "bridge" / "report" / "gap_report.csv", *sorted((run / "bridge").glob("report-*/gap_report.csv"))]
    gap = next((g for g in gaps if g.is_file()), gaps[0])
    facts = {"run": str(run.resolve()), "captioner_key": captioner, "bridge_key": bridge, "row": row, "gap": gap if gap.is_file() else None}
    return assemble(out, cap_meta.get("encoder") or {}, bridge_export, cap_export, decoding, facts, run, merge)


def _same_export(recorded: str, export: Path) -> bool:
    """Whether a path recorded by a step (relative to where it ran) names ``export``."""
    return Path(recorded).resolve() == export.resolve() or Path(recorded).parts[-3:] == export.parts[-3:]


def find_test_row(test_dir: Path, bridge_export: Path | None) -> dict | None:
    """The captioner's test row that captions audio through ``bridge_export`` (``None``: raw audio):
    ``{"key", "scores" (its scores.json), "folder"}``."""
    for scores_path in sorted(test_dir.glob("*/scores.json")) + sorted(test_dir.glob("scores.json")):
        scores = json.loads(scores_path.read_text())
        if not str(scores.get("input", "")).startswith("audio"):
            continue
        recorded = scores.get("bridge")
        if (recorded is None and bridge_export is None) or (recorded and bridge_export is not None and _same_export(recorded, bridge_export)):
            return {"key": scores_path.parent.name, "scores": scores, "folder": scores_path.parent}
    return None


def assemble(
    out: str | Path, encoder: dict, bridge_export: Path | None, cap_export: Path, decoding: dict, facts: dict, run: Path | None = None, merge: bool = False
) -> Path:
    """Write the bundle folder (atomically) from the component exports, the encoder's description and the facts of the card."""
    out = Path(out)
    with atomic_folder(out) as tmp:
        components = {"encoder": _encoder_component(tmp / "encoder", encoder, run)}
        if bridge_export is not None:
            shutil.copytree(bridge_export, tmp / "bridge")
            components["bridge"] = {"path": "bridge", "kind": "bridge"}
        else:
            components["bridge"] = None
        _captioner_component(cap_export, tmp / "captioner", merge)
        components["captioner"] = {"path": "captioner", "kind": "captioner", "merged": merge}
        for entry in components.values():
            if entry is not None:
                entry["config_sha256"] = sha256_file(tmp / entry["path"] / CONFIG)
        reports = _copy_reports(tmp / "reports", facts)
        cap_meta = json.loads((tmp / "captioner" / CONFIG).read_text())
        bridge_meta = json.loads((tmp / "bridge" / CONFIG).read_text()) if bridge_export is not None else None
        card = model_card(facts, encoder, bridge_meta, cap_meta, decoding, run)
        write_atomic(tmp / "README.md", card)
        write_json(
            tmp / CONFIG,
            {
                "format": BUNDLE_FORMAT,
                "format_version": FORMAT_VERSION,
                "components": components,
                "decoding": decoding,
                "test_row": facts["row"]["key"] if facts.get("row") else None,
                "reports": reports,
                "made_from": {k: facts.get(k) for k in ("run", "captioner_key", "bridge_key")},
                "files": {"README.md": sha256_file(tmp / "README.md"), **{f"reports/{n}": sha256_file(tmp / "reports" / n) for n in reports}},
            },
        )
    return out


def _encoder_component(folder: Path, description: dict, run: Path | None) -> dict:
    family = description.get("family")
    if family == "trained-contrastive":
        candidates = [Path(p) for p in (description.get("export"), run / "encoder" / "export" if run else None) if p]
        source = next((p for p in candidates if (p / CONFIG).is_file()), None)
        if source is None:
            raise ExportError(f"the captioner was trained on a trained encoder, but its export is at none of {[str(p) for p in candidates]}")
        meta = read_export(source, "encoder", required=(ENCODER_WEIGHTS,))
        if f"sha256:{meta['files'][ENCODER_WEIGHTS]}" != description.get("weights"):
            raise ExportError(
                f"{source} is not the encoder the captioner was trained with (weights {description.get('weights')}); pass the run it was trained in"
            )
        shutil.copytree(source, folder)
        return {"path": "encoder", "kind": "encoder"}
    if family == "laion-clap":
        weights = str(description.get("weights", ""))
        seed = re.fullmatch(r"random-init\(seed=(\d+)\)", weights)
        checkpoint = description.get("checkpoint_path")
        clap = {k: description[k] for k in ("amodel", "tmodel", "crop", "quantise_int16") if k in description}
        clap["seed"] = int(seed.group(1)) if seed else 0
        reference = {
            "format": CLAP_REFERENCE,
            "format_version": FORMAT_VERSION,
            "clap": clap,
            "checkpoint": None
            if seed
            else {"name": Path(checkpoint).name if checkpoint else None, "path": checkpoint, "sha256": weights.removeprefix("sha256:")},
            "description": description,
        }
        folder.mkdir()
        write_json(folder / CONFIG, reference)
        return {"path": "encoder", "kind": "laion-clap"}
    raise ExportError(f"the captioner's export does not describe a known encoder (family {family!r}): it cannot be bundled; re-export it")


def _captioner_component(cap_export: Path, folder: Path, merge: bool) -> None:
    from diffusion_link.caption.model import CaptionModel

    meta = read_export(cap_export, "captioner")
    if not merge and "base_lm" in meta:  # already records its base LM: copied as it is
        shutil.copytree(cap_export, folder)
        return
    if not merge:
        log.warning("%s does not record its base LM's checksum (an export made before they were recorded): the bundle records the LM found now", cap_export)
    model = CaptionModel.from_pretrained(cap_export)
    model.save_pretrained(folder, extra={k: v for k, v in meta.items() if k not in (*RESERVED, "config", "base_lm", "merged")}, merge=merge)


def _copy_reports(folder: Path, facts: dict) -> list[str]:
    folder.mkdir()
    names = []
    if facts.get("row"):
        for name in ("scores.json", "predictions.csv"):
            if (facts["row"]["folder"] / name).is_file():
                shutil.copy2(facts["row"]["folder"] / name, folder / name)
                names.append(name)
    if facts.get("gap"):
        for source in (facts["gap"], facts["gap"].with_suffix(".md")):
            if source.is_file():
                shutil.copy2(source, folder / source.name)
                names.append(source.name)
    return names


# -- the model card -------------------------------------------------------------------------------


def _interval(scores: dict, key: str) -> str:
    lo, hi = scores.get(f"{key}_lo"), scores.get(f"{key}_hi")
    return f"[{lo:.4f}, {hi:.4f}]" if lo is not None and hi is not None else "—"


def model_card(facts: dict, encoder: dict, bridge: dict | None, captioner: dict, decoding: dict, run: Path | None) -> str:
    """The bundle's README.md: what it is, what it was trained on, its test figures with their intervals
    (from the run's reports, as they are), how to use it, what it is for and its limits."""
    base = captioner.get("base_lm") or {}
    settings = captioner.get("config", {})
    store = _store_header(captioner.get("store"), run)
    amodel = encoder.get("amodel") if isinstance(encoder.get("amodel"), str) else "trained towers"
    bridge_name = ((bridge or {}).get("training") or {}).get("name") or (bridge or {}).get("name") or "Diffusion-Link"
    bridge_label = f"{bridge_name} bridge" if bridge else "no bridge (raw audio)"
    lines = [
        "---",
        "library_name: diffusion-link",
        "tags: [audio-captioning, clap, diffusion]",
        "---",
        "",
        "# Diffusion-Link audio captioner",
        "",
        f"Audio in, caption out: {encoder.get('family')} encoder → {bridge_label} → "
        f"LLM captioner ({captioner.get('mode')}, base LM `{base.get('name') or settings.get('llm')}`"
        f"{', LoRA merged' if captioner.get('merged') else ', LoRA adapter'}). Made by `diffusion-link bundle` from `{facts.get('run')}`.",
        "",
        "```python",
        "from diffusion_link import AudioCaptioner",
        'captioner = AudioCaptioner.from_pretrained("path/to/this/folder")',
        'captions = captioner(["a.wav", "b.flac"])',
        "```",
        "",
        "## Components",
        "",
        "| part | what | identity |",
        "|---|---|---|",
        f"| encoder | {encoder.get('family')} ({amodel}), {encoder.get('sample_rate')} Hz | `{encoder.get('weights')}` |",
    ]
    if bridge:
        b = bridge.get("config", {})
        what = f"{bridge_name}: t* {b.get('t_start')}, K {b.get('steps')} {b.get('sampler')} steps, hidden {b.get('hidden')}"
        lines.append(f"| bridge | {what} | `sha256:{bridge['files'].get(BRIDGE_WEIGHTS, '')[:16]}…` |")
    lines += [
        f"| captioner | {settings.get('prefix_tokens')} soft token(s), {settings.get('projector')} projector, LoRA r {settings.get('lora', {}).get('r')} "
        f"| base LM `{base.get('name')}`, {len(base.get('files', {}))} files checksummed |",
        "",
        f"Decoding: {', '.join(f'{k} {v}' for k, v in decoding.items())}.",
        "",
        "## Training data",
        "",
        f"- Captioner: {captioner.get('mode')}, {captioner.get('steps')} steps on split `{captioner.get('split')}` "
        f"of the feature store `{captioner.get('store')}`.",
    ]
    if bridge:
        t = bridge.get("training") or {}
        lines.append(f"- Bridge: {t.get('steps', '?')} steps on split `{t.get('split', '?')}` of the same store.")
    if store:
        lines.append(f"- Source of the store: `{json.dumps(store.get('data', {}), ensure_ascii=False)[:400]}`")
    lines += ["", "## Test figures", ""]
    row = facts.get("row")
    if row:
        s = row["scores"]
        scores = s["scores"]
        lines += [
            f"Row `{s.get('name')}` of the run's captioning test: {len(s.get('clips', []))} clips of split `{s.get('split')}`, "
            "95 % bootstrap intervals over clips "
            "(reports/scores.json; per-clip captions in reports/predictions.csv).",
            "",
            "| metric | value | 95 % interval |",
            "|---|---|---|",
            *(f"| {k} | {v:.4f} | {_interval(scores, k)} |" for k, v in scores.items() if not k.endswith(("_lo", "_hi"))),
        ]
    else:
        lines.append("This run has no test row for this captioner and bridge: no figures.")
    if facts.get("gap"):
        lines += ["", "Modality gap on the test split (reports/gap_report.csv; value and 95 % interval):", ""]
        from diffusion_link.evaluation.report import read_gap_report

        table = read_gap_report(facts["gap"])
        metrics = [k for k in next(iter(table.values()), {}) if f"{k}_lo" in next(iter(table.values()))]
        lines += ["| method | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
        lines += [f"| {method} | " + " | ".join(f"{v[k]:.4f} {_interval(v, k)}" for k in metrics) + " |" for method, v in table.items()]
    lines += [
        "",
        "## Intended use",
        "",
        "Captioning short general-audio clips in English for research and comparison with other captioners; "
        "the bridge can be switched off (`bridge=False`) to compare against raw audio.",
        "",
        "## Limits",
        "",
        "- The figures hold for the data it was tested on; on other audio (music, speech, other recording conditions) expect them to drop.",
        "- Captions are short, single-sentence and may name sounds that are not there; do not use them where that matters.",
        "- The encoder, the bridge and the captioner belong together: each was trained on this encoder's embeddings; a laion-clap "
        "encoder is referenced by checksum and must be supplied (`clap_checkpoint=`).",
        "",
    ]
    return "\n".join(lines)


def _store_header(store: str | None, run: Path | None) -> dict[str, Any] | None:
    candidates = [Path(store)] if store else []
    if run is not None:
        candidates += sorted((run / "stores").glob("*"))
    for path in candidates:
        if (path / "store.json").is_file():
            return json.loads((path / "store.json").read_text())
    return None
