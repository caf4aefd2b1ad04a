"""Issue 21: the demo's references that differ in content (opt-in), their spread, and the right-animals measure."""

import hashlib
import json

import pytest

from diffusion_link.data.audiocaps import AudioCapsCSV
from diffusion_link.data.demo import DemoAudioCaps, animal_accuracy, animals_named, build_demo
from diffusion_link.data.reference_spread import MEAN_COSINE_AIM, WITHIN_SHARE_AIM, minilm_embed, references_of, spread, tfidf_embed
from diffusion_link.data.references import BACKGROUND, CLASSES, classes_named, right_animals

# csv/*.csv of build_demo(n_train=9, n_val=3, n_test=3) before the varied references existed
DEFAULT_CSV_SHA256 = {
    "csv/test.csv": "30b349b16d222d23ce832f09b147627f0bfb865b838e6f471c3e519b714e791c",
    "csv/train.csv": "93edf64f99e0637a06fedd393439353283f1fdd6e27e5d386ab34862b92c19ce",
    "csv/val.csv": "484529ba3a1ec6f7e6d000f75624f9e702139ffb53a486e4a59e15a30515796f",
}


def test_the_default_build_is_unchanged_and_the_varied_one_differs_only_in_its_references(tmp_path):
    default = build_demo(tmp_path / "d", n_train=9, n_val=3, n_test=3)
    varied = build_demo(tmp_path / "v", n_train=9, n_val=3, n_test=3, references="varied")
    d, v = (json.loads((r / "manifest.json").read_text()) for r in (default, varied))
    assert {k: hashlib.sha256((default / k).read_bytes()).hexdigest() for k in DEFAULT_CSV_SHA256} == DEFAULT_CSV_SHA256
    assert "references" not in d["settings"] and v["settings"]["references"] == "varied"
    assert not any("references" in c for c in d["clips"].values())
    assert {k: h for k, h in d["files"].items() if k.startswith("audio")} == {k: h for k, h in v["files"].items() if k.startswith("audio")}
    assert d["files"]["csv/val.csv"] != v["files"]["csv/val.csv"]
    assert "references" not in DemoAudioCaps(str(tmp_path / "d")).describe()
    assert DemoAudioCaps(str(tmp_path / "v"), references="varied").describe()["references"] == "varied"
    with pytest.raises(ValueError, match="use 'paraphrase'"):
        build_demo(tmp_path / "x", n_train=1, n_val=1, n_test=1, references="free")


def test_varied_references_are_true_five_on_val_and_test_and_spread_past_the_aim(tmp_path):
    root = build_demo(tmp_path / "v", n_train=30, n_val=24, n_test=24, references="varied")
    default = build_demo(tmp_path / "d", n_train=30, n_val=24, n_test=24)
    info = json.loads((root / "manifest.json").read_text())["clips"]
    source = AudioCapsCSV(str(root / "csv"), str(root / "audio"))
    assert [len(r.captions) for r in source.records("val") + source.records("test")] == [5] * 48
    assert [len(r.captions) for r in source.records("train")] == [3] * 30
    styles = {"class": 0, "partial": 0, "background": 0}
    for record in source.records("train") + source.records("val") + source.records("test"):
        clip = info[record.clip_id]
        truth = set(clip["animals"])
        for ref in record.captions:
            assert animals_named(ref) <= truth, (ref, clip)  # never a wrong species
            assert all(CLASSES[c] & truth for c in classes_named(ref)), (ref, clip)  # never a wrong class
            said_noise = any(b.strip() in ref.lower() for b in BACKGROUND) or "wind" in ref.lower()
            assert clip["noisy"] or not said_noise, (ref, clip)  # the background only when there is one
            styles["class"] += bool(classes_named(ref))
            styles["partial"] += 0 < len(animals_named(ref)) < len(truth)
            styles["background"] += said_noise
    assert all(n > 0 for n in styles.values()), styles
    embed = minilm_embed()  # the demo encoder's frozen text tower
    varied, paraphrase = spread(references_of(root, "val"), embed), spread(references_of(default, "val"), embed)
    assert varied["within_share"] >= WITHIN_SHARE_AIM and varied["mean_cosine"] <= MEAN_COSINE_AIM, varied
    assert varied["within_share"] > 1.5 * paraphrase["within_share"] and varied["mean_cosine"] < paraphrase["mean_cosine"] - 0.1, (varied, paraphrase)


def test_spread_is_zero_within_clips_whose_references_are_one_text():
    same = spread([["a dog barks"] * 3, ["a cat meows"] * 3], tfidf_embed)
    assert same["within_share"] == pytest.approx(0.0) and same["mean_cosine"] == pytest.approx(1.0)
    differ = spread([["a dog barks", "a cat meows"], ["a cat meows", "a dog barks"]], tfidf_embed)
    assert differ["within_share"] == pytest.approx(1.0)  # every difference lies within clips
    with pytest.raises(ValueError, match="two or more references"):
        spread([["one"]], tfidf_embed)


def test_right_animals_accepts_a_correct_class_word_and_rejects_a_wrong_species_or_class():
    assert right_animals("A bird calls", ["duck"]) and right_animals("a farm animal moos", ["cow"])
    assert right_animals("A pet barks, then a bird calls", ["dog", "owl"]) and right_animals("Two birds call", ["duck", "owl"])
    assert right_animals("A dog barks and a farm animal calls", ["dog", "sheep"])
    assert not right_animals("A duck quacks", ["owl"])  # wrong species
    assert not right_animals("A bird calls", ["cow"])  # a class that holds none of the clip's animals
    assert not right_animals("A bird calls and a dog barks", ["owl", "duck"])  # right class, one wrong species
    assert not right_animals("A dog barks", ["dog", "cat"]) and not right_animals("An animal calls", ["dog"])  # one missing; none named
    assert not right_animals("A bird calls", ["duck"], classes=False) and right_animals("A duck quacks", ["duck"], classes=False)
    clips = {"c": {"animals": ["duck"], "held_out_pair": False}}
    assert animal_accuracy({"c": "A bird calls"}, clips)["exact_animals_all"] == 0.0  # the default demo: exact species
    varied = {"c": {**clips["c"], "references": "varied"}}
    assert animal_accuracy({"c": "A bird calls"}, varied)["exact_animals_all"] == 1.0
    assert animal_accuracy({"c": "An owl hoots"}, varied)["exact_animals_all"] == 0.0


def test_a_folder_holding_another_kind_of_demo_is_never_built_over(tmp_path):
    """A tool pointed at data/demo-varied (or -unseen) reads that build; asking for another kind there is refused
    with the folder named, and the build is left as it was (the probe once rebuilt data/demo-unseen as the default)."""
    from diffusion_link.data.demo import settings_of

    root = build_demo(tmp_path / "v", n_train=9, n_val=3, n_test=3, references="varied")
    before = (root / "manifest.json").read_bytes()
    refused = r"holds the demo built from the ten recordings, varied references, and this asks for it from the ten recordings, paraphrase"
    with pytest.raises(ValueError, match=refused):
        build_demo(root, n_train=9, n_val=3, n_test=3)
    assert (root / "manifest.json").read_bytes() == before
    source = DemoAudioCaps(root, **settings_of(root))
    assert settings_of(root) == {"n_train": 9, "n_val": 3, "n_test": 3, "seed": 0, "train_captions": 3, "unseen": False, "references": "varied"}
    source.prepare()  # the same build: nothing is written
    assert (root / "manifest.json").read_bytes() == before
    assert build_demo(root, n_train=12, n_val=3, n_test=3, references="varied") == root  # the same kind, resized: rebuilt
    assert json.loads((root / "manifest.json").read_text())["settings"]["n_train"] == 12
    assert settings_of(tmp_path / "none") == {}
