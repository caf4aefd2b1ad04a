"""The gap report's figures (one PCA panel per row; each row's paired difference from raw audio with the
interval the report holds) and the flags of degenerate results (an encoder's recall not above chance, a
collapsed gap row), in the report, the summary, the page and the log. Written files, no model."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from bs4 import BeautifulSoup

from diffusion_link.evaluation.degenerate import COLLAPSE_COSINE, collapse_flags, recall_flags, spread
from diffusion_link.evaluation.gap import Clips, gap_table
from diffusion_link.evaluation.gap_figures import DIFF_METRICS, paired_difference_figure, pca_panels
from diffusion_link.evaluation.report import read_gap_report, write_gap_report

RAW = "none (raw audio)"


def _unit(a):
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def _rows(n=40, dim=16, seed=0):
    """Text, raw audio (offset from the text), a bridge that moves it halfway, and one that collapses it."""
    g = np.random.default_rng(seed)
    text = _unit(g.standard_normal((n, dim)) + 2.0 * np.eye(dim)[0])
    audio = _unit(text + 0.6 * g.standard_normal((n, dim)) + 2.0 * np.eye(dim)[1])
    half = _unit(text + 0.5 * (audio - text))
    collapsed = _unit(np.tile(g.standard_normal(dim), (n, 1)) + 1e-4 * g.standard_normal((n, dim)))
    return text, {RAW: audio, "halfway": half, "collapsed": collapsed}


def _results(text, rows, bootstrap=40):
    import torch

    n = len(text)
    clips = {name: Clips.from_flat(torch.from_numpy(x), torch.from_numpy(text), torch.ones(n), key=torch.arange(n)) for name, x in rows.items()}
    return gap_table(clips, baseline=RAW, bootstrap=bootstrap)


def test_pca_panels_draw_one_panel_per_row_on_shared_axes(tmp_path):
    text, rows = _rows()
    fig = pca_panels(text, rows[RAW], rows)
    axes = fig.axes
    assert [ax.get_title() for ax in axes] == list(rows)  # one panel per row, in table order
    assert len({ax.get_xlim() for ax in axes}) == 1 and len({ax.get_ylim() for ax in axes}) == 1  # the same axes
    for ax, x in zip(axes, rows.values()):
        grey, row = ax.collections  # text behind, the row on top
        assert len(grey.get_offsets()) == len(text) and len(row.get_offsets()) == len(x)
    # the PCA is fitted once (on text + raw audio): the text's points are the same in every panel
    assert all(np.allclose(ax.collections[0].get_offsets(), axes[0].collections[0].get_offsets()) for ax in axes)
    with pytest.raises(ValueError, match="at least one row"):
        pca_panels(text, rows[RAW], {})


def test_the_paired_difference_figure_draws_the_reports_intervals(tmp_path):
    text, rows = _rows()
    write_gap_report(_results(text, rows), tmp_path, baseline=RAW)
    report = read_gap_report(tmp_path)  # from the file, as written
    fig = paired_difference_figure(report, RAW)
    drawn = {}
    for ax in fig.axes:
        for segments in ax.collections:  # one segment per row and metric, named by its gid
            ((lo, _), (hi, _)), method_key = segments.get_segments()[0], segments.get_gid()
            drawn[tuple(method_key.split("|"))] = (lo, hi)
        assert any(line.get_xdata()[0] == 0 and line.get_linestyle() == "--" for line in ax.lines)  # the zero line
    expected = {(m, k) for m in ("halfway", "collapsed") for k in DIFF_METRICS}
    assert set(drawn) == expected  # no baseline row, every metric with a paired interval
    for (method, key), (lo, hi) in drawn.items():
        assert lo == pytest.approx(report[method][f"{key}_diff_lo"]) and hi == pytest.approx(report[method][f"{key}_diff_hi"])
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["halfway", "collapsed"]
    with pytest.raises(ValueError, match="no paired differences"):
        paired_difference_figure({RAW: report[RAW]}, RAW)


def test_a_collapsed_row_is_flagged_in_the_report_the_log_and_the_page(tmp_path, caplog):
    text, rows = _rows()
    assert spread(rows["collapsed"])[0] >= COLLAPSE_COSINE > spread(text)[0]
    with caplog.at_level(logging.WARNING, logger="diffusion_link.evaluation.degenerate"):
        flags = collapse_flags(rows, text)
    assert {name: f["collapsed"] for name, f in flags.items()} == {RAW: 0.0, "halfway": 0.0, "collapsed": 1.0}
    assert "gap-table row 'collapsed' collapsed to (nearly) one point" in caplog.text and "halfway" not in caplog.text
    # a spread well below the text's, though not one point (cosine < 0.999): flagged by the variance
    g = np.random.default_rng(3)
    tight = _unit(np.tile(g.standard_normal(16), (40, 1)) + 0.06 * g.standard_normal((40, 16)))
    assert spread(tight)[0] < COLLAPSE_COSINE and collapse_flags({"tight": tight}, text)["tight"]["collapsed"] == 1.0
    results = _results(text, rows, bootstrap=0)
    for name, f in flags.items():
        results[name].update(f)
    report = tmp_path / "artifacts" / "bridge" / "report"
    write_gap_report(results, report, ["a note"], baseline=RAW)
    written = read_gap_report(report)
    assert [written[m]["collapsed"] for m in rows] == [0.0, 0.0, 1.0] and written["collapsed"]["mean_cosine"] >= COLLAPSE_COSINE
    md = (report / "gap_report.md").read_text()
    assert "WARNING: gap-table row 'collapsed' collapsed" in md and "halfway' collapsed" not in md
    from diffusion_link.report import build_report

    soup = BeautifulSoup(build_report(tmp_path / "artifacts").read_text(encoding="utf-8"), "html.parser")
    from diffusion_link.evaluation.degenerate import collapsed_rows

    assert [p.get_text() for p in soup.select("p.gap-warning")] == [f"WARNING: {w}" for w in collapsed_rows(written)]
    assert collapsed_rows(written)[0].startswith("gap-table row 'collapsed' collapsed")
    top = [li.get_text() for li in soup.select("#degenerate li")]
    assert len(top) == 1 and top[0].startswith("bridge/report: gap-table row 'collapsed' collapsed")


def test_recall_not_above_chance_is_flagged(tmp_path):
    at_chance = {"test/a2t_R@1": 1 / 16, "test/t2a_R@1": 0.0625, "test/chance_R@1": 1 / 16}
    assert len(recall_flags(at_chance)) == 2 and "not above chance (0.062 on 16 clips" in recall_flags(at_chance)[0]
    three = {**at_chance, "test/a2t_R@1": 3 / 16, "test/t2a_R@1": 4 / 16}  # 3 hits: p = 0.07; 4 hits: p = 0.015
    assert [f.split(" R@1")[0] for f in recall_flags(three)] == ["encoder audio->text"]
    assert recall_flags({"test/a2t_R@1": 0.9, "test/t2a_R@1": 0.8, "test/chance_R@1": 0.01}) == []
    assert recall_flags({"test/a2t_R@1": 0.02, "test/t2a_R@1": 0.04, "test/chance_R@1": 0.01})[0].startswith("encoder audio->text")


def test_recall_at_chance_is_flagged_in_the_summary_and_on_the_page(tmp_path):
    from diffusion_link.report import build_report
    from diffusion_link.run.summary import encoder_lines

    scores = {
        "test/a2t_R@1": 0.0625,
        "test/t2a_R@1": 0.5,
        "test/chance_R@1": 0.0625,
        "test/paired_cosine": 0.1,
        "test/probe_accuracy": 1.0,
    }
    test = tmp_path / "artifacts" / "encoder" / "test" / "scores.json"
    test.parent.mkdir(parents=True)
    test.write_text(json.dumps({"scores": scores}))
    store = {"encoder": {"family": "trained-contrastive", "weights": "sha256:" + "0" * 64, "amodel": "LogMelCNN()", "tmodel": "x"}}
    lines = encoder_lines(store, test)
    assert [line for line in lines if "WARNING" in line] == [f"  WARNING, degenerate result: {recall_flags(scores)[0]}"]
    assert "audio->text R@1 0.062 is not above chance" in lines[-1]
    text, rows = _rows()  # the page needs something to report besides the encoder test
    write_gap_report(_results(text, rows, bootstrap=0), tmp_path / "artifacts" / "bridge" / "report", baseline=RAW)
    soup = BeautifulSoup(Path(build_report(tmp_path / "artifacts")).read_text(encoding="utf-8"), "html.parser")
    assert [li.get_text() for li in soup.select("#degenerate li")] == [f"encoder/test: {recall_flags(scores)[0]}"]


@pytest.mark.parametrize("clips", [1, 2])
def test_the_validation_pca_figure_draws_a_ranks_one_or_two_clips(clips):
    """Under DDP each rank draws its own share of val: one or two texts span fewer than two PCA axes."""
    from diffusion_link.evaluation.report import pca_figure

    rng = np.random.default_rng(0)
    text, audio = rng.normal(size=(clips, 8)), rng.normal(size=(clips, 8))
    fig = pca_figure(text, audio, {"bridge": audio + 0.1})
    points = [c.get_offsets() for c in fig.axes[0].collections]
    assert [p.shape for p in points] == [(clips, 2)] * 3
    assert np.isfinite(np.concatenate(points)).all()
