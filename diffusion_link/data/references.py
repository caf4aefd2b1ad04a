"""References that differ in content (issue 21): the demo's clips described the way several annotators would.

The default demo writes a clip's references as paraphrases of one content (``references="paraphrase"``):
the text given the audio is nearly one point. ``build_demo(..., references="varied")`` writes them with
:func:`varied_references` instead: each reference is one annotator's choice of what to say, and every
choice is TRUE for the clip (it never names an animal or a class the clip does not hold):

- how specific: the species ("a duck"), a class from :data:`CLASSES` ("a bird", "a farm animal", "a pet"),
  or only "an animal"; mixed within one sentence;
- how much: all the animals, the count ("two birds call one after the other"), or only one of them
  (true but partial: "a dog barks" of a dog and a cat), or vague ("animal sounds");
- the order (sequences), the background (the noise or wind, only when the clip is ``noisy``) and how loud
  (only when the clip's level is far from the middle: :data:`LOUD_DBFS`, :data:`QUIET_DBFS`), or not.

The "right animals" measure (:func:`right_animals`) accepts a correct class word in place of a species on
such a build. ``python -m diffusion_link.data.references --measure ROOT`` measures the spread of a build's
references (:mod:`diffusion_link.data.reference_spread`).
"""

from __future__ import annotations

import numpy as np

from diffusion_link.data.demo import ANIMAL_WORDS, MIX, SEQUENCE, SEQUENCE3, SINGLE, animals_named

#: The class words a reference or a caption may use for an animal, and the animals each is true of.
#: "an animal" / "animals" is true of every animal but names none (the measure does not count it).
CLASSES = {
    "bird": frozenset({"duck", "owl", "rooster"}),
    "farm animal": frozenset({"cow", "duck", "horse", "pig", "rooster", "sheep"}),
    "pet": frozenset({"cat", "dog"}),
}
#: singular noun phrase, plural noun of each class
CLASS_WORDS = {"bird": ("a bird", "birds"), "farm animal": ("a farm animal", "farm animals"), "pet": ("a pet", "pets")}
#: a clip this loud (RMS, dBFS) may be called loud; this quiet, faint
LOUD_DBFS, QUIET_DBFS = -17.0, -27.0
REFERENCE_KINDS = ("paraphrase", "varied")

# present (one), present (several), gerund: verbs true of any animal's call
GENERIC_VERBS = [
    ("calls", "call", "calling"),
    ("makes a sound", "make sounds", "making sounds"),
    ("cries out", "cry out", "crying out"),
    ("vocalizes", "vocalize", "vocalizing"),
]
BACKGROUND = [
    " over background noise",
    " with a steady hiss in the background",
    " while wind blows",
    " with static noise behind it",
    " as wind rushes past the microphone",
]
LOUDNESS = {"loud": [" loudly", " at a high volume", ", very loud"], "quiet": [" faintly", " at a low volume", ", quietly"]}
VAGUE = {
    "single": ["an animal makes a sound", "animal sounds", "the sound of an animal", "an animal is heard"],
    "mix": ["animals make noises at once", "a mix of animal sounds", "several animal sounds overlap", "animal sounds"],
    "sequence": ["animal sounds one after another", "animals take turns making noise", "a series of animal sounds", "animal sounds"],
}
NUMBERS = {2: "two", 3: "three"}
#: the default templates' words that claim what the build does not know (how loud, how near, how many calls,
#: which is in the background): the varied writer leaves those templates out
UNKNOWN = ("loudly", "nearby", "several times", "in the background")


def classes_named(text: str) -> frozenset[str]:
    """The classes of :data:`CLASSES` a text names (singular or plural)."""
    words = " " + " ".join(text.lower().replace(",", " ").replace(".", " ").split()) + " "
    return frozenset(c for c, (one, many) in CLASS_WORDS.items() if f" {one.split(' ', 1)[1]} " in words or f" {many} " in words)


def right_animals(caption: str, animals: list[str], classes: bool = True) -> bool:
    """Whether a caption names the clip's animals right.

    ``classes=False`` (the default demo's exact measure): it names exactly the clip's species. ``classes=True``
    (a build with varied references): it names no wrong species and no class that holds none of the clip's
    animals, and each animal is named by its species or by a class of :data:`CLASSES` that holds it.
    """
    named, truth = animals_named(caption), frozenset(animals)
    if not classes:
        return named == truth
    said = classes_named(caption)
    if named - truth or any(not CLASSES[c] & truth for c in said):
        return False
    return all(a in named or any(a in CLASSES[c] for c in said) for a in truth)


def clip_level(wave: np.ndarray) -> float:
    """The clip's RMS level in dBFS."""
    return float(20 * np.log10(max(float(np.sqrt(np.mean(np.square(wave, dtype=np.float64)))), 1e-9)))


def _phrase(animal: str, how: str, rng: np.random.RandomState) -> tuple[str, tuple[str, str, str]]:
    """A noun phrase for one animal, and its verbs (one, several, gerund): the species or a class."""
    noun, verb, gerund, _ = ANIMAL_WORDS[animal]
    if how == "species":
        return noun, (verb, verb, gerund)
    generic = GENERIC_VERBS[rng.randint(len(GENERIC_VERBS))]
    options = [CLASS_WORDS[c][0] for c in sorted(CLASSES) if animal in CLASSES[c]] + ["an animal"]
    return options[rng.randint(len(options))], generic


def _sentence(kind: str, animals: list[str], mode: str, rng: np.random.RandomState) -> str:
    """All the clip's animals, each by species or class (``mode``: species, class or mixed), in one of the
    default templates' shapes."""
    hows = {"species": ["species"] * len(animals), "class": ["class"] * len(animals)}.get(mode) or list(rng.choice(["species", "class"], len(animals)))
    if mode == "mixed" and len(set(hows)) == 1:
        hows[rng.randint(len(hows))] = "class" if hows[0] == "species" else "species"
    if mode == "species":
        templates = {"single": SINGLE, "mix": MIX, "sequence": SEQUENCE if len(animals) == 2 else SEQUENCE3}[kind]
        templates = [t for t in templates if not any(w in t for w in UNKNOWN)]
        template = templates[rng.randint(len(templates))]
    else:
        template = {
            "single": ["{a} {v}", "the sound of {a} {g}", "{a} is {g}", "someone records {a} {g}"],
            "mix": ["{a} {v} while {b} {vb}", "{a} and {b} can be heard at the same time", "{a} {g} together with {b} {gb}"],
            "sequence": ["{a} {v} and then {b} {vb}", "first {a} {v}, then {b} {vb}", "{b} {vb} after {a} {v}"]
            if len(animals) == 2
            else ["{a} {v}, then {m} {vm}, and then {b} {vb}", "first {a} {v}, next {m} {vm}, finally {b} {vb}"],
        }[kind]
        template = template[rng.randint(len(template))]
    words = []
    for animal, how in zip(animals, hows):
        noun, verbs = _phrase(animal, how, rng)
        if any(noun == w[0] for w in words):  # "a bird ... and then another bird"
            noun = "another " + noun.split(" ", 1)[1]
        words.append((noun, verbs))
    (a, (v, _, g)), (b, (vb, _, gb)) = words[0], words[-1]
    m, (vm, _, gm) = words[1] if len(words) > 2 else ("", ("", "", ""))
    return template.format(a=a, v=v, g=g, m=m, vm=vm, gm=gm, b=b, vb=vb, gb=gb)


def _count(kind: str, animals: list[str], rng: np.random.RandomState) -> str:
    """How many animals (and of which class, when they share one)."""
    shared = [c for c in sorted(CLASSES) if set(animals) <= CLASSES[c]]
    one, several, gerund = GENERIC_VERBS[rng.randint(len(GENERIC_VERBS))]
    if len(animals) == 1:
        noun = (CLASS_WORDS[shared[rng.randint(len(shared))]][0] if shared and rng.rand() < 0.5 else "an animal").split(" ", 1)[1]
        return f"a single {noun} {one}"
    n = NUMBERS[len(animals)]
    noun = CLASS_WORDS[shared[rng.randint(len(shared))]][1] if shared and rng.rand() < 0.7 else ["animals", "different animals"][rng.randint(2)]
    tail = {"mix": [" at once", " at the same time"], "sequence": [" one after the other", " in turn"]}[kind]
    return f"{n} {noun} {several}{tail[rng.randint(2)]}"


def _partial(kind: str, animals: list[str], rng: np.random.RandomState) -> str:
    """One of a clip's animals only: true, but not all of it."""
    i = rng.randint(len(animals))
    noun, verb, gerund, _ = ANIMAL_WORDS[animals[i]]
    if kind == "sequence" and rng.rand() < 0.5:
        where = ("it starts with", animals[0]) if rng.rand() < 0.5 else ("it ends with", animals[-1])
        noun, _, gerund, _ = ANIMAL_WORDS[where[1]]
        return f"{where[0]} {noun} {gerund}"
    tail = ["", "", " among other sounds", " and another animal is heard"][rng.randint(4)]
    return f"{noun} {verb}{tail}"


STYLES = ("species", "class", "mixed", "count", "partial", "vague")
#: how often an annotator writes each style (single-animal clips: no "mixed", no "partial")
STYLE_WEIGHTS = {"species": 0.3, "class": 0.2, "mixed": 0.15, "count": 0.1, "partial": 0.15, "vague": 0.1}


def _reference(kind: str, animals: list[str], rng: np.random.RandomState, noisy: bool, level: float) -> str:
    styles = [s for s in STYLES if len(animals) > 1 or s not in ("mixed", "partial")]
    weights = np.array([STYLE_WEIGHTS[s] for s in styles])
    style = styles[rng.choice(len(styles), p=weights / weights.sum())]
    if style in ("species", "class", "mixed"):
        text = _sentence(kind, animals, style, rng)
    elif style == "count":
        text = _count(kind, animals, rng)
    elif style == "partial":
        text = _partial(kind, animals, rng)
    else:
        text = VAGUE[kind][rng.randint(len(VAGUE[kind]))]
    loudness = "loud" if level >= LOUD_DBFS else "quiet" if level <= QUIET_DBFS else None
    if loudness and rng.rand() < 0.35:
        text += LOUDNESS[loudness][rng.randint(len(LOUDNESS[loudness]))]
    if noisy and rng.rand() < 0.5:  # some annotators mention the background, some do not
        text += BACKGROUND[rng.randint(len(BACKGROUND))]
    text = " ".join(text.split())
    return text[0].upper() + text[1:]


def varied_references(kind: str, animals: list[str], n: int, rng: np.random.RandomState, noisy: bool, level: float) -> list[str]:
    """``n`` distinct references of one clip, each one annotator's (see the module's docstring); ``level``:
    the clip's RMS level (:func:`clip_level`)."""
    out: list[str] = []
    for _ in range(50 * n):
        text = _reference(kind, animals, rng, noisy, level)
        if text not in out:
            out.append(text)
        if len(out) == n:
            return out
    raise RuntimeError(f"could not write {n} distinct references for {kind} {animals}")


if __name__ == "__main__":  # python -m diffusion_link.data.references --measure ROOT
    from diffusion_link.data.reference_spread import main

    raise SystemExit(main())
