"""Caption diversity (``caption_samples: n``): the measures on toy caption sets with known values, n
samples of a deterministic row are one caption repeated (never recomputed), a stochastic toy bridge gives
different inputs per k and the same ones in two runs, the table is written, and a recipe turns it on for one
captioner's test without touching its fit."""

import csv
import math

import pytest
import torch

from diffusion_link.bridge.model import BridgeConfig, DiffusionLink
from diffusion_link.caption.inputs import Bridges, sample_seed
from diffusion_link.caption.samples import reference_record, sample_record, sampled_captions
from diffusion_link.evaluation.caption_diversity import clip_diversity, distinct_n, self_bleu, set_diversity, write_diversity

SAME = ["a dog barks twice in the yard"] * 4
DISJOINT = ["a dog barks twice loudly", "cows moo in green fields", "the owl hoots at night", "rain falls on tin roofs"]


def test_identical_captions_are_the_least_diverse():
    d = clip_diversity(SAME)
    assert d["distinct_1"] == pytest.approx(1 / 4) and d["distinct_2"] == pytest.approx(1 / 4)  # 7 distinct words, 28 in all
    assert d["self_bleu"] == pytest.approx(1.0, abs=1e-6) and d["distinct_captions"] == 1
    assert clip_diversity(["A dog barks twice, in the yard."] * 2)["distinct_captions"] == 1  # case and punctuation ignored


def test_captions_with_nothing_in_common_are_the_most_diverse():
    d = clip_diversity(DISJOINT)
    assert d["distinct_1"] == 1.0 and d["distinct_2"] == 1.0 and d["distinct_captions"] == 4
    assert d["self_bleu"] == pytest.approx(0.0, abs=1e-6)


def test_self_bleu_is_each_captions_bleu_4_against_the_others():
    from aac_metrics.functional.bleu import bleu

    captions = ["a dog barks in the yard", "a dog barks in the park", "a cat meows in the yard"]
    expected = [float(bleu([c], [[o for o in captions if o != c]], n=4)[1]["bleu_4"][0]) for c in captions]
    assert self_bleu(captions) == pytest.approx(sum(expected) / 3)
    assert 0 < self_bleu(captions) < 1 and math.isnan(self_bleu(captions[:1]))
    assert distinct_n(["a b", "a c"], 1) == pytest.approx(3 / 4) and math.isnan(distinct_n(["one"], 2))


def test_identical_short_captions_are_not_called_diverse():
    """A caption of fewer than four words has no 4-gram: BLEU-4 would score it 0 even against copies of itself, so
    a deterministic row's "A frog croaks" x 5 would look as diverse as captions with nothing in common."""
    assert self_bleu(["A frog croaks"] * 5) == pytest.approx(1.0, abs=1e-6)
    assert self_bleu(["A frog croaks", "An owl hoots", "A frog croaks"]) == pytest.approx(2 / 3, abs=0.05)  # 2 of 3 have a copy
    assert self_bleu(["frogs", "owls"]) == pytest.approx(0.0, abs=1e-6)


def test_set_diversity_averages_over_clips_and_counts_the_vocabulary():
    d = set_diversity([SAME, DISJOINT])
    assert d["self_bleu"] == pytest.approx(0.5, abs=1e-6) and d["distinct_captions"] == pytest.approx(2.5)
    # 7 words + 20 words, 6 shared (a, dog, barks, twice, in, the); the first captions: 7 + 5, 4 shared
    assert d["vocab"] == 7 + 20 - 6 and d["vocab_first"] == 7 + 5 - 4
    assert (d["clips"], d["samples"]) == (2, 4)
    with pytest.raises(ValueError, match="at least one caption"):
        set_diversity([SAME, []])


def _bridge(**config) -> DiffusionLink:
    torch.manual_seed(0)
    return DiffusionLink(BridgeConfig(dim=16, hidden=32, **config)).eval()


def _bridges(module: DiffusionLink) -> Bridges:
    bridges = Bridges([])
    bridges.exports.append(module)
    bridges._index["toy"] = 0
    return bridges


def test_a_stochastic_bridge_gives_different_inputs_per_k_and_the_same_in_two_runs():
    bridges = _bridges(_bridge(noise_start=True))
    assert bridges.stochastic("toy")
    audio, clips = torch.randn(3, 16), ["c0", "c1", "c2"]
    seeds = [[sample_seed(7, c, k) for c in clips] for k in (1, 2)]
    first, second = bridges.seeded(audio, "toy", seeds[0]), bridges.seeded(audio, "toy", seeds[1])
    assert not torch.allclose(first, second)  # sample 1 and sample 2 of each clip differ
    assert torch.equal(first, bridges.seeded(audio, "toy", seeds[0]))  # a second run: the same samples
    assert torch.equal(first[1:2], bridges.seeded(audio[1:2], "toy", seeds[0][1:2]))  # whatever the batch
    assert sample_seed(7, "c0", 1) != sample_seed(8, "c0", 1) != sample_seed(7, "c1", 1)
    assert _bridges(_bridge(sampler="ddpm", t_start=20)).stochastic("toy")


@pytest.mark.parametrize("config", [{}, {"kind": "regressor"}], ids=["ddim-from-audio", "regressor"])
def test_deterministic_rows_give_n_copies_of_their_caption_without_generating(config):
    bridges = _bridges(_bridge(**config))
    audio = torch.randn(2, 16)
    assert not bridges.stochastic("toy") and not bridges.stochastic(None)
    assert torch.equal(bridges.seeded(audio, "toy", [1, 2]), bridges(audio, "toy"))  # the same input whatever the seed

    def generate(_):
        raise AssertionError("a deterministic row's captions are not recomputed")

    for setting, given in (("toy", audio), (None, audio), (None, None)):  # the bridge, raw audio, the text ceiling
        captions, deterministic = sampled_captions(generate, bridges, given, ["c0", "c1"], setting, ["one", "two"], 3, 0)
        assert deterministic and captions == [["one"] * 3, ["two"] * 3]


def test_a_stochastic_rows_samples_are_captioned_from_their_own_inputs():
    bridges = _bridges(_bridge(noise_start=True))
    seen = []

    def generate(inputs):
        seen.append(inputs)
        return [f"caption {len(seen)} of clip {i}" for i in range(len(inputs))]

    captions, deterministic = sampled_captions(generate, bridges, torch.randn(2, 16), ["c0", "c1"], "toy", ["first 0", "first 1"], 3, 0)
    assert not deterministic and captions == [[f"first {i}", f"caption 1 of clip {i}", f"caption 2 of clip {i}"] for i in (0, 1)]
    assert len(seen) == 2 and not torch.allclose(seen[0], seen[1])


def test_the_table_is_written_with_the_references_row(tmp_path):
    samples = [("c0", SAME[:3]), ("c1", DISJOINT[:3])]
    row = sample_record(samples, [["x"], ["y"]], None, True)  # one clip's worth of CIDEr-D is not computed here
    assert row["n"] == 3 and row["deterministic"] and row["cider_d_first"] is None and row["diversity"]["distinct_captions"] == 2
    refs = reference_record([DISJOINT, SAME], 3)
    assert refs["n"] == 3 and refs["diversity"] == set_diversity([DISJOINT[:3], SAME[:3]])
    csv_path, md = write_diversity({"raw": row, "references (first 3)": refs}, tmp_path)
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    assert [r["row"] for r in rows] == ["raw", "references (first 3)"] and float(rows[0]["self_bleu"]) == pytest.approx(0.5, abs=1e-6)
    assert rows[0]["deterministic"] == "True" and rows[1]["deterministic"] == ""
    text = md.read_text()
    assert "| raw | 3 | yes | — | — | — |" in text and "| references (first 3) | 3 | — |" in text and "self-BLEU" in text


def test_a_recipe_turns_samples_on_for_one_captioners_test_only(tmp_path, monkeypatch):
    from test_runner import write_recipe

    from diffusion_link.run import load_recipe, recipe_steps

    monkeypatch.chdir(tmp_path)
    base = write_recipe(tmp_path)
    (tmp_path / "more.yaml").write_text("extends: recipe.yaml\ncaptioners:\n  zs:\n    test_args: {model.init_args.caption_samples: 5}\n")
    steps, before = recipe_steps(load_recipe(tmp_path / "more.yaml")), recipe_steps(load_recipe(base))
    command = {s.name: s.command for s in steps}
    tests = {s.name: s.command for s in steps if s.kind == "caption-test"}
    assert [n for n, c in tests.items() if "--model.init_args.caption_samples=5" in c] == [next(n for n in tests if "zs" in n)]
    fits = [s for s in before if s.kind == "caption-fit"]
    assert len(fits) == 2 and all(command[s.name] == s.command for s in fits)  # the fits' commands (and keys) unchanged
    assert all("caption_samples" not in " ".join(c) for n, c in tests.items() if "zs" not in n)


def test_the_report_page_shows_a_captioners_diversity_table(tmp_path):
    from bs4 import BeautifulSoup
    from test_report import _toy_run

    from diffusion_link.report import build_report

    clips = [f"c{i}" for i in range(4)]
    root = tmp_path / "artifacts" / "caption"
    _toy_run(root, {c: 1.0 for c in clips}, {c: 1.2 for c in clips})
    row = sample_record([(c, SAME[:2]) for c in clips], [], None, True)
    write_diversity({"zero-shot, raw audio": row, "references (first 2)": reference_record([DISJOINT] * 4, 2)}, root)
    soup = BeautifulSoup(build_report(tmp_path / "artifacts").read_text(encoding="utf-8"), "html.parser")
    assert soup.select_one("h3.caption-diversity").get_text() == "Caption diversity: caption"
    cells = [[td.get_text() for td in tr.select("td")] for tr in soup.select("table.diversity-table tr")[1:]]
    assert [c[:3] for c in cells] == [["zero-shot, raw audio", "2", "yes"], ["references (first 2)", "2", "—"]]
    assert cells[0][8] == "1.000" and cells[1][8] == "0.000"  # self-BLEU: one caption repeated; references with nothing in common
