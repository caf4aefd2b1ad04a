"""``diffusion-link report``: one static, self-contained HTML page for a run, from what its stages wrote.

It reads, under a run's artifacts folder (``artifacts/`` for the demo, ``artifacts/audiocaps/`` for the
recipes): every captioning system's ``scores.json`` + ``predictions.csv`` (the caption stage's test), every
``gap_report.csv`` with the figures beside it (the bridge stage's test), the ``sweep_*.png`` plots, every
export's ``config.json`` (encoder, bridges, captioners), the feature store's ``store.json`` and
``audio.csv`` (where each clip's audio file is), and the encoder's test ``scores.json``.

The page holds the run's provenance, the gap and captioning tables (with their intervals), the figures
(inlined as data URIs), and one row per test clip: an ``<audio>`` player, the references, and every
system's caption with the words that no reference contains marked. Plain inline JavaScript filters the
rows (systems disagree, a system's CIDEr-D on the clip, a word) and pages through them, so a page of
thousands of clips stays fast; nothing is fetched from the network.

Audio: a clip whose file lies inside the run's folder (:func:`run_folder`: the current folder when the
artifacts are inside it, as for the ``make`` targets, else the folder holding the artifacts folder; the
page still plays when that folder is moved or copied whole) is linked by a path relative to the page;
any other is embedded as a small Ogg Vorbis copy (mono, 16 kHz). ``audio="link"`` / ``"embed"`` force
one or the other.
"""

from __future__ import annotations

import base64
import csv
import datetime
import io
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from diffusion_link import __version__
from diffusion_link.evaluation.degenerate import collapsed_rows, recall_flags
from diffusion_link.evaluation.report import COLUMNS, gap_table_cells, read_gap_report
from diffusion_link.export import kind_of
from diffusion_link.files import write_atomic
from diffusion_link.report.tables import caption_table_rows

AUDIO_MODES = ("auto", "link", "embed")
EMBED_RATE = 16000
_WORD = re.compile(r"[A-Za-z0-9']+")


@dataclass
class System:
    """One captioning system: a caption-stage test's outputs."""

    folder: Path
    report: dict
    rows: dict[str, dict]  # clip_id -> predictions.csv row
    seed: int | None = None  # set when the run holds several seeds' tests: each seed is its own setting

    @property
    def name(self) -> str:
        return self.report.get("name") or self.folder.name

    @property
    def setting(self) -> str:
        """The captioner's mode; with several seeds, the seed too, so that a row is paired with its own seed's raw row."""
        return self.report.get("mode", "") + (f" (seed {self.seed})" if self.seed is not None else "")

    @property
    def raw_audio(self) -> bool:
        """Tested on audio embeddings with no bridge."""
        return self.report.get("input", "audio") == "audio" and not self.report.get("bridge")

    def sort_key(self) -> tuple:
        r = self.report
        text = r.get("input", "audio") != "audio"
        mean_shift = r.get("bridge") == "mean-shift"
        return (r.get("mode") != "zero-shot", -1 if self.seed is None else self.seed, text, not self.raw_audio, not mean_shift, self.name)


@dataclass
class Run:
    root: Path
    systems: list[System] = field(default_factory=list)
    gap_reports: list[Path] = field(default_factory=list)
    sweeps: list[Path] = field(default_factory=list)
    exports: list[Path] = field(default_factory=list)
    encoder_tests: list[Path] = field(default_factory=list)
    store: dict | None = None
    store_path: Path | None = None


def read_system(folder: Path) -> System | None:
    """The captioning system whose test wrote ``folder`` (scores.json + predictions.csv), or None."""
    if not (folder / "scores.json").is_file() or not (folder / "predictions.csv").is_file():
        return None
    with open(folder / "predictions.csv", newline="", encoding="utf-8") as f:
        rows = {row["clip_id"]: row for row in csv.DictReader(f)}
    return System(folder, json.loads((folder / "scores.json").read_text()), rows)


def collect(root: str | Path) -> Run:
    """Everything the stages wrote under ``root``."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"no run at {root}: run the stages first (e.g. `make demo`), or pass the artifacts folder of a run")
    run = Run(root)
    for scores in sorted(root.rglob("scores.json")):
        system = read_system(scores.parent)
        if system is not None:
            run.systems.append(system)
        elif any(k.endswith("R@1") for k in json.loads(scores.read_text()).get("scores", {})):
            run.encoder_tests.append(scores)
    seeds = {s.report.get("seed") for s in run.systems}
    if len(seeds) > 1:  # seed-<s>/ folders: every seed's rows are their own setting
        for s in run.systems:
            s.seed = s.report.get("seed")
    run.systems.sort(key=System.sort_key)
    run.gap_reports = sorted(root.rglob("gap_report.csv"), key=lambda p: (p.parent.name != "report", len(p.parts), str(p)))
    run.sweeps = sorted(root.rglob("sweep_*.png"))
    run.exports = sorted(p for p in root.rglob("export/config.json"))
    store = _find_store(run)
    if store is not None:
        run.store_path, run.store = store, json.loads((store / "store.json").read_text())
    if not run.systems and not run.gap_reports:
        raise FileNotFoundError(f"{root} holds no captioning results (scores.json + predictions.csv) and no gap report (gap_report.csv): nothing to report")
    return run


def _find_store(run: Run) -> Path | None:
    """The feature store the captioners were tested on (its recorded path, or the same name under the run)."""
    for system in run.systems:
        recorded = system.report.get("store")
        if recorded:
            for candidate in (Path(recorded), run.root / "stores" / Path(recorded).name):
                if (candidate / "store.json").is_file():
                    return candidate
    stores = sorted(p.parent for p in run.root.glob("stores/*/store.json"))
    return stores[0] if stores else None


# -- cells ---------------------------------------------------------------------------------------------


def mark_novel(caption: str, references: list[str]) -> list[tuple[str, bool]]:
    """The caption as (text, novel) pieces: a word is novel when no reference contains it (case ignored)."""
    known = {w.lower() for r in references for w in _WORD.findall(r)}
    pieces, last = [], 0
    for match in _WORD.finditer(caption):
        if match.start() > last:
            pieces.append((caption[last : match.start()], False))
        pieces.append((match.group(), match.group().lower() not in known))
        last = match.end()
    if last < len(caption):
        pieces.append((caption[last:], False))
    return pieces


def _png(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def _audio_sources(run: Run, clips: list[str], page_dir: Path, mode: str) -> dict[str, dict]:
    """clip_id -> {"src": relative path or data URI, "kind": "link" | "embedded"} or {"missing": reason}."""
    if mode not in AUDIO_MODES:
        raise ValueError(f"audio must be one of {AUDIO_MODES}, not {mode!r}")
    located: dict[str, str] = {}
    if run.store_path is not None and (run.store_path / "audio.csv").is_file():
        with open(run.store_path / "audio.csv", newline="", encoding="utf-8") as f:
            located = {r["clip_id"]: r["path"] for r in csv.DictReader(f)}
    home = run_folder(run.root)
    out = {}
    for clip in clips:
        path = located.get(clip)
        if not path:
            why = (
                "the store records no audio file for it"
                if located
                else "the feature store has no audio.csv (made by an older version: rebuild it to link audio)"
            )
            out[clip] = {"missing": why}
            continue
        path = Path(path)
        if not path.is_file():
            out[clip] = {"missing": f"audio file not found: {path}"}
        elif mode == "link" or (mode == "auto" and path.resolve().is_relative_to(home)):
            out[clip] = {"src": Path(os.path.relpath(path.resolve(), page_dir.resolve())).as_posix(), "kind": "link"}
        else:
            out[clip] = {"src": embedded_audio(path), "kind": "embedded"}
    return out


def run_folder(root: Path) -> Path:
    """The folder whose files the page links rather than embeds: the current folder when the artifacts
    are inside it (``make`` targets: the repository, with data/ beside artifacts/), else the folder
    that holds the artifacts folder."""
    root, here = Path(root).resolve(), Path.cwd().resolve()
    return here if root.is_relative_to(here) and root != here else root.parent


def embedded_audio(path: Path, seconds: float = 30.0) -> str:
    """A small copy of an audio file as a data URI: mono, 16 kHz, Ogg Vorbis, at most ``seconds`` long."""
    import soundfile as sf

    from diffusion_link.data.audio import load_audio

    wave = load_audio(str(path), EMBED_RATE)[: int(seconds * EMBED_RATE)]
    buffer = io.BytesIO()
    sf.write(buffer, wave, EMBED_RATE, format="OGG", subtype="VORBIS")
    return "data:audio/ogg;base64," + base64.b64encode(buffer.getvalue()).decode()


def demo_clip_info(run: Run) -> dict | None:
    """On the demo (its store's data source), each test clip's animals, from the manifest beside the
    demo's audio files (for the captioning table's right-animals columns); else None."""
    data = (run.store or {}).get("data") or {}
    if "demo" not in (data.get("source"), (data.get("description") or {}).get("source")) or not (run.store_path / "audio.csv").is_file():
        return None
    with open(run.store_path / "audio.csv", newline="", encoding="utf-8") as f:
        first = next(csv.DictReader(f), None)
    manifest = next((p / "manifest.json" for p in Path(first["path"]).parents[:3] if (p / "manifest.json").is_file()), None) if first else None
    if manifest is None:
        return None
    clips = json.loads(manifest.read_text()).get("clips") or {}
    return clips if all(c in clips for s in run.systems for c in s.rows) else None


def _md_blocks(text: str) -> list[dict]:
    """What follows a gap report's main table: notes (``{"text"}``, one per line) and further Markdown tables
    (``{"headers", "rows"}``, e.g. the paired differences from raw audio; ``**bold**`` cells marked)."""
    blocks: list[dict] = []
    for block in text.split("\n\n"):
        lines = [line for line in block.splitlines() if line.strip()]
        if len(lines) >= 2 and all(line.startswith("|") for line in lines):
            cells = [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines if not set(line) <= set("|-: ")]
            rows = [(row[0], [(c.strip("*"), c.startswith("**")) for c in row[1:]]) for row in cells[1:]]
            blocks.append({"headers": cells[0][1:], "rows": rows})
        else:
            blocks += [{"text": line} for line in lines]
    return blocks


def _gap_sections(run: Run) -> list[dict]:
    sections = []
    for csv_path in run.gap_reports:
        folder = csv_path.parent
        md = folder / "gap_report.md"
        text = md.read_text() if md.is_file() else ""
        notes = _md_blocks(text.split("\n\n", 1)[1]) if "\n\n" in text else []
        figures = [(p.stem.replace("_", " "), _png(p)) for p in sorted(folder.glob("*.png"))]
        results = read_gap_report(csv_path)
        sections.append(
            {
                "title": folder.relative_to(run.root).as_posix(),
                "headers": [t for _, t in COLUMNS],
                "rows": gap_table_cells(results),
                "notes": [n for n in notes if not n.get("text", "").startswith("WARNING: ")],  # shown as warnings instead
                "warnings": collapsed_rows(results),
                "figures": figures,
            }
        )
    return sections


def diversity_sections(run: Run) -> list[dict]:
    """Each captioner test's ``caption_diversity.md`` (``caption_samples`` > 1): its folder and its blocks."""
    found = sorted(run.root.rglob("caption_diversity.md"))
    return [{"title": md.parent.relative_to(run.root).as_posix(), "blocks": _md_blocks(md.read_text())} for md in found]


def degenerate_results(run: Run, gap_sections: list[dict], captioning: dict) -> list[str]:
    """Every result the run flags as degenerate (evaluation/degenerate.py): an encoder's recall not above
    chance, a collapsed gap-table row, a captioner that ignores its input."""
    out = [f"{t.parent.relative_to(run.root).as_posix()}: {f}" for t in run.encoder_tests for f in recall_flags(json.loads(t.read_text())["scores"])]
    out += [f"{g['title']}: {w}" for g in gap_sections for w in g["warnings"]]
    out += [f"captioning, {r['setting']} / {r['system']}: {f}" for r in captioning.get("rows", []) for f in r["flags"]]
    return out


def _provenance(run: Run) -> dict:
    facts = [
        ("package", f"diffusion-link {__version__}"),
        ("built", datetime.datetime.now().strftime("%Y-%m-%d %H:%M")),
        ("run folder", str(run.root.resolve())),
    ]
    if run.store:
        enc = run.store.get("encoder", {})
        if enc.get("family") == "trained-contrastive":
            trained = enc.get("trained_on") or {}
            split, val, source = trained.get("train_split", "train"), trained.get("val_split", "val"), trained.get("source", "?")
            facts.append(("encoder", f"CLAP-style contrastive encoder trained on '{split}' of {source} only (selected on '{val}')"))
            facts.append(("encoder towers", f"audio {str(enc.get('amodel')).split('(')[0]}, text {enc.get('tmodel')}"))
        else:
            facts.append(("encoder", f"laion-clap {enc.get('amodel')}"))
        facts.append(("encoder weights", str(enc.get("weights"))))
        facts.append(("feature store", f"{run.store_path} (checksum {run.store.get('checksum')}; clips {run.store.get('rows')})"))
    seeds = sorted({str(s.report.get("seed")) for s in run.systems if s.report.get("seed") is not None})
    if seeds:
        facts.append(("seeds (captioning tests)", ", ".join(seeds)))
    for test in run.encoder_tests:
        s = json.loads(test.read_text())["scores"]
        prefix = next((k.split("/")[0] + "/" for k in s if k.endswith("a2t_R@1")), "")
        if f"{prefix}a2t_R@1" in s:
            facts.append(
                (
                    f"encoder test ({test.parent.relative_to(run.root).as_posix()})",
                    f"audio→text R@1 {s[f'{prefix}a2t_R@1']:.3f} (chance {s.get(f'{prefix}chance_R@1', float('nan')):.3f}), "
                    f"paired cosine {s.get(f'{prefix}paired_cosine', float('nan')):.3f}, modality probe {s.get(f'{prefix}probe_accuracy', float('nan')):.3f}",
                )
            )
    exports = []
    for path in run.exports:
        config = json.loads(path.read_text())
        kind = kind_of(config) or "export"
        exports.append({"path": path.parent.relative_to(run.root).as_posix(), "kind": kind, "json": json.dumps(config, indent=1, ensure_ascii=False)[:20000]})
    return {"facts": facts, "exports": exports}


def build_report(root: str | Path = "artifacts", out: str | Path | None = None, audio: str = "auto", title: str | None = None) -> Path:
    """Write ``<out>/index.html`` (default ``<root>/report/index.html``) for the run under ``root``; returns its path."""
    from jinja2 import Environment, PackageLoader, select_autoescape

    run = collect(root)
    out = Path(out) if out else run.root / "report"
    out.mkdir(parents=True, exist_ok=True)
    order = list(dict.fromkeys(c for s in run.systems for c in s.rows))
    sources = _audio_sources(run, order, out, audio)
    clips = []
    for clip in order:
        references = next((json.loads(s.rows[clip]["references"]) for s in run.systems if clip in s.rows), [])
        captions = []
        for i, s in enumerate(run.systems):
            row = s.rows.get(clip)
            if row is None:
                captions.append({"system": i, "pieces": [("(not captioned)", False)], "cider": None, "text": ""})
                continue
            cider = row.get("cider_d")
            captions.append(
                {"system": i, "pieces": mark_novel(row["candidate"], references), "cider": float(cider) if cider else None, "text": row["candidate"]}
            )
        distinct = len({c["text"].strip().lower() for c in captions})
        clips.append({"id": clip, "audio": sources[clip], "references": references, "captions": captions, "distinct": distinct})
    gap_sections, captioning = _gap_sections(run), caption_table_rows(run.systems, demo_clip_info(run))
    env = Environment(loader=PackageLoader("diffusion_link.report", "templates"), autoescape=select_autoescape(["html", "j2"]))
    page = env.get_template("index.html.j2").render(
        title=title or f"diffusion-link report: {run.root.resolve().parent.name}/{run.root.name}",
        provenance=_provenance(run),
        gap_sections=gap_sections,
        sweeps=[(p.relative_to(run.root).as_posix(), _png(p)) for p in run.sweeps],
        captioning=captioning,
        diversity=diversity_sections(run),
        degenerate=degenerate_results(run, gap_sections, captioning),
        systems=[{"name": s.name, "setting": s.setting, "has_cider": any(r.get("cider_d") for r in s.rows.values())} for s in run.systems],
        clips=clips,
        embedded=sum(1 for a in sources.values() if a.get("kind") == "embedded"),
        missing=sum(1 for a in sources.values() if "missing" in a),
    )
    return write_atomic(out / "index.html", page)


DESCRIPTION = (
    "Build a run's report page (one self-contained HTML file): provenance, the gap and captioning tables, the figures, "
    "and every test clip with an audio player, its references and each system's caption."
)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="diffusion-link report", description=DESCRIPTION)
    arguments(parser)
    return report(parser.parse_args(argv))


def arguments(parser) -> None:
    """The command's options (an argparse or jsonargparse parser)."""
    parser.add_argument("root", nargs="?", default="artifacts", help="the run's artifacts folder (default: artifacts; the recipes: artifacts/audiocaps)")
    parser.add_argument("--out", help="folder for index.html (default: ROOT/report)")
    parser.add_argument(
        "--audio",
        choices=AUDIO_MODES,
        default="auto",
        help="link clips by a relative path, embed small Ogg copies, or (auto) link those inside the run's folder and embed the others",
    )


def report(args) -> int:
    path = build_report(args.root, args.out, args.audio)
    print(f"Report: {path}  (open it in a browser; it needs no network)")
    return 0
