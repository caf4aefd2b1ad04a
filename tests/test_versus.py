"""Both tables' second comparison (issue 21): every row paired with a named row (the recipe's compare_to, e.g.
the regressor) as it is with raw audio: the same clips, the same order, the same resamples."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from diffusion_link.evaluation.gap import GAP_METRICS, Clips, gap_table
from diffusion_link.evaluation.gap_versus import versus_suffix
from diffusion_link.evaluation.report import read_gap_report, write_gap_report

RAW, REG = "none (raw audio)", "regressor (no diffusion)"
VS = versus_suffix(REG)


def _rows(n=40, dim=8, seed=0):
    """Text t_i; raw audio far from it; the regressor at cosine exactly 0.6 to its text; a row on the text itself."""
    g = np.random.default_rng(seed)
    t = g.standard_normal((n, dim))
    t /= np.linalg.norm(t, axis=1, keepdims=True)
    u = g.standard_normal((n, dim))
    u -= (u * t).sum(1, keepdims=True) * t  # orthogonal to t_i
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    raw = 0.1 * t + np.sqrt(1 - 0.01) * u
    rows = {RAW: raw, REG: 0.6 * t + 0.8 * u, "on the text": t}
    key = torch.arange(n)
    return {k: Clips.from_flat(torch.from_numpy(x), torch.from_numpy(t), torch.ones(n), key=key) for k, x in rows.items()}


def test_the_difference_from_the_regressor_is_row_minus_regressor_with_a_paired_interval():
    table = gap_table(_rows(), baseline=RAW, bootstrap=200, compare_to=(REG,))
    row, reg = table["on the text"], table[REG]
    assert table[REG]["paired_cosine"] == pytest.approx(0.6) and row["paired_cosine"] == pytest.approx(1.0)
    assert row[f"paired_cosine{VS}"] == pytest.approx(0.4)  # known: every clip's cosine rises by exactly 0.4
    assert row[f"paired_cosine{VS}_lo"] == pytest.approx(0.4) and row[f"paired_cosine{VS}_hi"] == pytest.approx(0.4)
    for m in GAP_METRICS:
        shown = lambda r: r.get(f"{m}_bc", r[m])  # noqa: E731 - Fréchet: its bias-corrected value, as the table shows it
        assert row[m + VS] == pytest.approx(shown(row) - shown(reg), rel=1e-9, abs=1e-12) and reg[m + VS] == 0.0
        assert row[m + "_diff"] == pytest.approx(shown(row) - shown(table[RAW]), rel=1e-9, abs=1e-12)  # raw audio's comparison is unchanged
        assert row[f"{m}{VS}_lo"] <= row[f"{m}{VS}_hi"]
    assert f"frechet{VS}" not in table[REG] or table[REG][f"frechet{VS}_lo"] == 0.0


def test_a_permutation_of_the_rows_leaves_every_interval_unchanged():
    rows = _rows(seed=3)
    first = gap_table(rows, baseline=RAW, bootstrap=100, compare_to=(REG,))
    permuted = gap_table(dict(reversed(list(rows.items()))), baseline=RAW, bootstrap=100, compare_to=(REG,))
    assert list(permuted) != list(first)
    for name in first:
        assert permuted[name] == pytest.approx(first[name], nan_ok=True)


def test_an_unknown_row_name_is_refused_with_the_known_rows(tmp_path):
    with pytest.raises(ValueError, match=r"compare_to 'regresor' is not a row of the gap table; its rows: \['none \(raw audio\)', 'regressor"):
        gap_table(_rows(), baseline=RAW, compare_to=("regresor",))
    with pytest.raises(ValueError, match="its rows"):
        write_gap_report(gap_table(_rows(), baseline=RAW), tmp_path, baseline=RAW, compare_to=("regresor",))
    from diffusion_link.bridge import BridgeModule

    with pytest.raises(ValueError, match=r"compare_to 'regresor' is not a row of the gap table \(model.init_args.compare_to\); its rows: .*'mean shift'.*'k1'"):
        BridgeModule(compare={"k1": "unused"}, compare_to=["regresor"])
    assert BridgeModule(compare={REG: "unused"}, compare_to=[REG]).compare_to == (REG,)
    from diffusion_link.run.recipe import RecipeError, load_recipe
    from diffusion_link.run.steps import recipe_steps

    with pytest.raises(RecipeError, match="compare_to 'regresor' is not a bridge row; the rows: .*regressor"):
        load_recipe("recipes/demo-baselines.yaml", ["compare_to=regresor"])
    steps = recipe_steps(load_recipe("recipes/demo-baselines.yaml"))  # the shipped recipe: both tables against the regressor
    gap = next(s for s in steps if s.kind == "gap")
    assert f"--model.init_args.compare_to={json.dumps([REG])}" in gap.command
    tests = [s for s in steps if s.kind == "caption-test"]
    assert tests and all("--model.init_args.compare_to=artifacts/bridge/regressor/export" in s.command for s in tests)


def test_the_report_writes_the_columns_the_section_and_the_figure(tmp_path):
    from diffusion_link.evaluation.gap_figures import paired_difference_figure

    table = gap_table(_rows(), baseline=RAW, bootstrap=50, compare_to=(REG,))
    csv_path, md_path = write_gap_report(table, tmp_path, baseline=RAW, compare_to=(REG,))
    back = read_gap_report(csv_path)
    assert back["on the text"][f"paired_cosine{VS}"] == pytest.approx(0.4, abs=1e-5) and f"R@1{VS}_hi" in back[RAW]
    md = md_path.read_text()
    assert f"Paired difference from {REG} (compare_to;" in md and "**+0.4000 [0.4000, 0.4000]**" in md
    fig = paired_difference_figure(table, REG, suffix=VS)
    assert fig.axes and "regressor" in fig._suptitle.get_text()


# -- the captioning table ----------------------------------------------------------------------------------


def _system(folder: Path, name: str, values: dict[str, float], **report) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "predictions.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["clip_id", "candidate", "references", "rouge_l", "cider_d"])
        for i, (clip, v) in enumerate(values.items()):
            writer.writerow([clip, f"caption {i}", json.dumps(["a dog barks"]), f"{v / 4:.6g}", f"{v:.6g}"])
    mean = float(np.mean(list(values.values())))
    scores = {"cider_d": mean, "rouge_l": mean / 4}
    base = {"name": name, "mode": "zero-shot", "bridge": None, "input": "audio", "scores": scores}
    (folder / "scores.json").write_text(json.dumps({**base, **report}))
    return folder


def test_the_captioning_table_pairs_every_row_with_its_settings_regressor_row(tmp_path):
    from diffusion_link.report import caption_table_rows, paired_difference, read_system
    from diffusion_link.report.seeds import seed_values
    from diffusion_link.run.summary import caption_table

    rng = np.random.default_rng(0)
    clips = [f"c{i:03d}" for i in range(80)]
    raw = {c: round(float(v), 3) for c, v in zip(clips, rng.gamma(2.0, 0.5, 80))}  # exact in predictions.csv
    reg = {c: v + 0.3 for c, v in raw.items()}
    dl = {c: v + 0.1 for c, v in raw.items()}
    dl = dict(reversed(list(dl.items())))  # another order in the file: matched by clip id
    versus = {"compare_to": "bridge/regressor/export"}
    folders = [
        _system(tmp_path / "raw", "zero-shot, raw audio", raw, **versus),
        _system(tmp_path / "reg", "zero-shot + regressor", reg, bridge="bridge/regressor/export", **versus),
        _system(tmp_path / "dl", "zero-shot + Diffusion-Link", dl, bridge="bridge/diffusion-link/export", **versus),
        _system(tmp_path / "sup", "supervised, raw audio", raw, mode="supervised", **versus),
    ]
    systems = [read_system(f) for f in folders]
    table = caption_table_rows(systems)
    by_name = {r["system"]: r for r in table["rows"]}
    p = paired_difference(reg, dl)
    assert p.diff == pytest.approx(-0.2) and p.lo == pytest.approx(-0.2) and p.excludes_zero  # known: 0.1 − 0.3 on every clip
    assert by_name["zero-shot + Diffusion-Link"]["named"]["versus"] == "-0.200 [-0.200, -0.200]"
    assert by_name["zero-shot + Diffusion-Link"]["named"]["bold"] and by_name["zero-shot + Diffusion-Link"]["named"]["name"] == "zero-shot + regressor"
    assert by_name["zero-shot, raw audio"]["named"]["versus"] == "-0.300 [-0.300, -0.300]"
    assert by_name["zero-shot + regressor"]["named"]["versus"] == ""  # the row itself
    # a setting without a row through that bridge says so, and a warning names it
    assert by_name["supervised, raw audio"]["named"]["versus"] == "no row through bridge/regressor/export"
    assert any("no supervised row through bridge/regressor/export" in w for w in table["warnings"])
    summary = caption_table(folders, None)
    assert "CIDEr-D vs compare_to row" in summary and "**-0.200 [-0.200, -0.200]**" in summary
    # across seeds: the same difference per seed
    values = seed_values(systems)
    assert values["zero-shot / zero-shot + Diffusion-Link"]["cider_d_vs"] == pytest.approx(-0.2)
    assert "cider_d_vs" not in values["zero-shot / zero-shot + regressor"]


def test_with_two_settings_each_row_is_compared_with_its_own_settings_row_and_the_header_names_neither(tmp_path):
    """A table with zero-shot and supervised rows: the column is not titled by the zero-shot row (it would
    mislabel the supervised rows); the legend and the section name each setting's own compare_to row."""
    from diffusion_link.report import caption_table_rows, read_system
    from diffusion_link.run.summary import caption_table

    rng = np.random.default_rng(1)
    clips = [f"c{i:03d}" for i in range(60)]
    raw = {c: round(float(v), 3) for c, v in zip(clips, rng.gamma(2.0, 0.5, 60))}
    shifted = lambda d: {c: v + d for c, v in raw.items()}  # noqa: E731
    versus, reg = {"compare_to": "bridge/regressor/export"}, {"bridge": "bridge/regressor/export"}
    sup = {"mode": "supervised"}
    folders = [
        _system(tmp_path / "zs-raw", "zero-shot, raw audio", raw, **versus),
        _system(tmp_path / "zs-reg", "zero-shot + regressor", shifted(0.3), **reg, **versus),
        _system(tmp_path / "sup-raw", "supervised, raw audio", shifted(0.5), **sup, **versus),
        _system(tmp_path / "sup-reg", "supervised + regressor", shifted(0.6), **sup, **reg, **versus),
    ]
    table = caption_table_rows([read_system(f) for f in folders])
    assert table["named"] == {"zero-shot": "zero-shot + regressor", "supervised": "supervised + regressor"}
    by_name = {r["system"]: r["named"] for r in table["rows"]}
    assert by_name["supervised, raw audio"]["name"] == "supervised + regressor" and by_name["supervised, raw audio"]["versus"].startswith("-0.100")
    assert by_name["zero-shot, raw audio"]["name"] == "zero-shot + regressor" and by_name["zero-shot, raw audio"]["versus"].startswith("-0.300")
    summary = caption_table(folders, None)
    header = next(line for line in summary.splitlines() if line.startswith("| setting | system |"))
    assert "CIDEr-D vs compare_to row" in header and "regressor" not in header
    assert "zero-shot: zero-shot + regressor; supervised: supervised + regressor" in summary
    assert any("zero-shot: zero-shot + regressor; supervised: supervised + regressor" in n for n in table["notes"])
