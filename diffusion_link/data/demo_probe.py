"""Does a trained encoder hear the right animal in recordings it never heard? (the demo's encoder-level proxy)

    python -m diffusion_link.data.demo_probe artifacts/encoder/export [--split val] [--root data/demo]

For one demo split (val to select settings; test only to report), with an exported encoder:

- ``a2t_R@1``: audio->text recall@1 over the split's clips and all their captions (a hit when the top
  caption's text is one of the clip's references, so identical template captions of other clips count);
- ``animal_single``: for single-animal clips, how often the nearest of ten class captions ("A dog barks",
  one per animal) names the clip's animal (chance 10 %): the closest the encoder alone gets to "the
  captioner names the right animal";
- ``animal_single_unseen``: the same over clips all of whose sources are recordings no training clip uses
  (with the cat's held-out time segments: every val/test clip).

It prints one JSON line and returns the dict.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from diffusion_link.data.demo import ANIMAL_WORDS, DemoAudioCaps, settings_of


def class_captions() -> dict[str, str]:
    """One plain caption per animal ("A dog barks"), the targets of the animal proxy."""
    return {a: f"{words[0]} {words[1]}".capitalize() for a, words in ANIMAL_WORDS.items()}


def trained_spans(info: dict[str, dict]) -> dict[str, list[tuple[float, float]]]:
    """Per recording, the stretches (seconds) that training clips use, from the manifest."""
    spans: dict[str, list[tuple[float, float]]] = {}
    for clip in info.values():
        if clip["split"] == "train":
            for s in clip.get("sources", []):
                spans.setdefault(s["recording"], []).append((s["start"], s["end"]))
    return spans


def unseen(sources: list[dict], spans: dict[str, list[tuple[float, float]]]) -> bool:
    """Whether no source of a clip overlaps a stretch that a training clip uses."""
    return bool(sources) and all(s["end"] <= a or s["start"] >= b for s in sources for a, b in spans.get(s["recording"], []))


def probe(encoder, source: DemoAudioCaps, split: str = "val") -> dict:
    """The figures of the module's docstring for ``encoder`` (a ContrastiveEncoder) on ``source``'s ``split``."""
    records = source.records(split)
    info = source.clip_info()
    waves = [source.load(r, split, encoder.sample_rate) for r in records]
    audio = encoder.encode_audio(waves).numpy()
    texts = sorted({c for r in records for c in r.captions})
    text = encoder.encode_text(texts).numpy()
    top = np.argmax(audio @ text.T, axis=1)
    r1 = float(np.mean([texts[t] in r.captions for t, r in zip(top, records)]))
    names, captions = zip(*class_captions().items())
    guess = np.argmax(audio @ encoder.encode_text(list(captions)).numpy().T, axis=1)
    spans = trained_spans(info)
    single, fresh = [], []
    for g, r in zip(guess, records):
        clip = info[r.clip_id]
        if len(clip["animals"]) == 1:
            hit = names[g] == clip["animals"][0]
            single.append(hit)
            if unseen(clip.get("sources", []), spans):
                fresh.append(hit)
    return {
        "split": split,
        "clips": len(records),
        "a2t_R@1": r1,
        "chance_R@1": 1.0 / len(records),
        "animal_single": float(np.mean(single)) if single else float("nan"),
        "single_clips": len(single),
        "animal_single_unseen": float(np.mean(fresh)) if fresh else float("nan"),
        "unseen_single_clips": len(fresh),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m diffusion_link.data.demo_probe", description=__doc__.split("\n\n")[0])
    parser.add_argument("export", help="an encoder export folder (artifacts/encoder/export)")
    parser.add_argument("--split", default="val", choices=["val", "test"])
    parser.add_argument("--root", default="data/demo", help="a built demo (data/demo, data/demo-unseen, data/demo-varied): read as built")
    args = parser.parse_args(argv)
    from diffusion_link.encoder.contrastive import ContrastiveEncoder

    source = DemoAudioCaps(args.root, **settings_of(args.root))  # the build that is there (default, unseen or varied)
    print(json.dumps(probe(ContrastiveEncoder.from_pretrained(args.export), source, args.split)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
