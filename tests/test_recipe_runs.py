"""The shipped recipes run end to end through the runner, every step a real stage in its own process:
recipes/audiocaps.yaml on a small AudioCaps-layout fixture (the official CSV columns, real clips in
per-split folders, renamed to the AudioCaps pattern `{youtube_id}_{start_time}`) with a random-init
laion-clap HTSAT-tiny (the CLAP architecture; no real weights are here) and a tiny GPT-2 for the LLM;
recipes/clotho.yaml on real clips in aac-datasets' Clotho layout; and recipes/smoke.yaml on CPU (the check `make gpu-check` runs on a GPU machine)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path


import pytest

from diffusion_link.run import load_recipe, recipe_steps, run_recipe
from diffusion_link.run.runner import read_record

REPO = Path(__file__).resolve().parents[1]


#: a recipe at its smallest: a tiny LM, three bridge steps, one caption epoch, short greedy captions, CPU
SMOKE = [
    "LLM=tiny-gpt2",
    "LORA_TARGETS=null",
    "PRECISION=32",
    "WORKERS=0",
    "BRIDGE_STEPS=3",
    "BRIDGE_WARMUP=1",
    "BRIDGE_EMA=0.5",
    "CAPTION_EPOCHS=1",
    "CAPTION_WARMUP=1",
    "trainer.accelerator=cpu",
    "steps.caption-test.args.model.init_args.decoding.max_new_tokens=6",
    "steps.caption-test.args.model.init_args.decoding.num_beams=1",
]


def audiocaps_fixture(demo: Path, root: Path) -> tuple[Path, Path]:
    """The tiny demo rewritten as an AudioCaps copy: official columns, clips named ``{youtube_id}_{start_time}``."""
    csv_dir, audio_dir = root / "csv", root / "audio"
    csv_dir.mkdir(parents=True)
    for split in ("train", "val", "test"):
        with open(demo / "csv" / f"{split}.csv", newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        with open(csv_dir / f"{split}.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=["audiocap_id", "youtube_id", "start_time", "caption"])
            writer.writeheader()
            for row in rows:
                writer.writerow({**row, "youtube_id": f"yt{row['youtube_id']}", "start_time": "30"})
        (audio_dir / split).mkdir(parents=True)
        for clip in sorted((demo / "audio" / split).iterdir()):
            shutil.copy(clip, audio_dir / split / f"yt{clip.stem}_30{clip.suffix}")
    return csv_dir, audio_dir


def test_the_audiocaps_recipe_runs_end_to_end(tmp_path, tiny_demo, monkeypatch, capsys):
    monkeypatch.chdir(REPO)  # the recipe names configs relative to the repository; everything it writes goes under RUN
    csv_dir, audio_dir = audiocaps_fixture(tiny_demo, tmp_path / "audiocaps")
    run = tmp_path / "run"
    overrides = [
        f"run_dir={run}",
        "CLAP=null",
        f"AUDIOCAPS_CSV={csv_dir}",
        f"AUDIOCAPS_AUDIO={audio_dir}",
        "AUDIOCAPS_NAME={youtube_id}_{start_time}",
        *SMOKE,
    ]
    assert run_recipe("recipes/audiocaps.yaml", overrides) == 0
    out = capsys.readouterr()
    recipe = load_recipe("recipes/audiocaps.yaml", overrides)
    steps = recipe_steps(recipe)
    assert len(steps) == 12 and all(read_record(recipe, s).get("status") == "done" for s in steps)
    store = json.loads((run / "stores" / "audiocaps" / "store.json").read_text())
    assert store["status"] == "complete" and store["rows"] == {"train": 6, "val": 3, "test": 3} and store["failures"] == 0
    assert store["encoder"]["amodel"] == "HTSAT-tiny"
    gap = (run / "bridge" / "report" / "gap_report.csv").read_text()
    for row in ("none (raw audio)", "mean shift", "Diffusion-Link", "Diffusion Bridge", "w/o cross-sample loss", "w/o topology loss"):
        assert row in gap
    systems = sorted(json.loads(p.read_text())["name"] for p in run.glob("caption/*/test/*/scores.json"))
    assert len(systems) == 7 and "zero-shot, text embedding (ceiling)" in systems and "zero-shot + mean shift" in systems
    page = (run / "report" / "index.html").read_text()
    assert "zero-shot + Diffusion-Link" in page and "w/o topology loss" in page
    assert "Modality gap" in out.out and "Captioning, test split" in out.out
    # a second run reuses every step but the cache, which finds its store complete
    assert run_recipe("recipes/audiocaps.yaml", overrides) == 0
    assert capsys.readouterr().err.count("up to date, reused") == 11


@pytest.mark.slow  # 5 CPU-min (15 min wall on 2 shared cores): chunk_average encodes every 10 s window; the AudioCaps test above covers every kind of step
def test_the_clotho_recipe_runs_end_to_end(tmp_path, tiny_demo, monkeypatch, capsys):
    """recipes/clotho.yaml on the tiny demo's real clips written in aac-datasets' Clotho layout (read through
    aac_datasets.Clotho): dev / val / eval, five captions per clip, the split folders given as symlinks."""
    from aac_layouts import demo_clips, write_clotho

    monkeypatch.chdir(REPO)
    clips = demo_clips(tiny_demo, 12)
    written = write_clotho(tmp_path / "elsewhere", {"dev": clips[:6], "val": clips[6:9], "eval": clips[9:12]})
    root = tmp_path / "aac"
    (root / "CLOTHO_v2.1" / "clotho_audio_files").mkdir(parents=True)
    (root / "CLOTHO_v2.1" / "clotho_csv_files").symlink_to(tmp_path / "elsewhere" / "CLOTHO_v2.1" / "clotho_csv_files", target_is_directory=True)
    for folder in ("development", "validation", "evaluation"):
        target = tmp_path / "elsewhere" / "CLOTHO_v2.1" / "clotho_audio_files" / folder
        (root / "CLOTHO_v2.1" / "clotho_audio_files" / folder).symlink_to(target, target_is_directory=True)
    run = tmp_path / "run"
    overrides = [
        f"run_dir={run}",
        "CLAP=null",
        f"CLOTHO_ROOT={root}",
        *SMOKE,
    ]
    assert run_recipe("recipes/clotho.yaml", overrides) == 0
    recipe = load_recipe("recipes/clotho.yaml", overrides)
    steps = recipe_steps(recipe)
    assert len(steps) == 7 and all(read_record(recipe, s).get("status") == "done" for s in steps)
    store = json.loads((run / "stores" / "clotho" / "store.json").read_text())
    assert store["status"] == "complete" and store["rows"] == {"train": 6, "val": 3, "test": 3} and store["failures"] == 0
    assert store["data"]["source"] == "aac-datasets:clotho" and store["encoder"]["crop"] == "chunk_average"
    with open(run / "stores" / "clotho" / "audio.csv", newline="") as f:
        assert sum(1 for r in csv.DictReader(f) if Path(r["path"]).is_file()) == 12  # the page's players
    from datasets import load_from_disk

    test = load_from_disk(str(run / "stores" / "clotho" / "test"))
    assert {c: list(caps) for c, caps in zip(test["clip_id"], test["captions"])} == written["eval"]
    systems = sorted(json.loads(p.read_text())["name"] for p in run.glob("caption/*/test/*/scores.json"))
    zero_shot = ["zero-shot, raw audio", "zero-shot + mean shift", "zero-shot + Diffusion-Link", "zero-shot, text embedding (ceiling)"]
    assert systems == sorted(zero_shot + ["supervised + Diffusion-Link"])
    assert "zero-shot + Diffusion-Link" in (run / "report" / "index.html").read_text()
    assert "Captioning, test split" in capsys.readouterr().out


@pytest.mark.slow  # ~5 min on 2 cores: the AudioCaps test above already runs every kind of stage step through the runner
def test_the_smoke_recipe_runs_on_cpu(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    overrides = ["ACCELERATOR=cpu", "PRECISION=32", f"RUN_DIR={tmp_path / 'run'}", f"DATA={tmp_path / 'data'}"]
    assert run_recipe("recipes/smoke.yaml", overrides) == 0
    run = tmp_path / "run"
    assert (run / "bridge" / "ablations" / "sweep_steps.png").is_file()
    assert json.loads((run / "encoder" / "test" / "scores.json").read_text())["scores"]["test/chance_R@1"] > 0
    assert len(list(run.glob("caption/*/test/*/predictions.csv"))) == 4
    assert (run / "report" / "index.html").is_file()
