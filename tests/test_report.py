"""The report page (``diffusion-link report``) of a tiny real run: the caption stage's tests (raw audio,
Diffusion-Link) and the gap analysis on the tiny demo store. Its content is checked with an HTML parser;
a headless Chromium (Debian's chromium + chromium-driver, driven by selenium) plays it: every ``<audio>``
has a duration, the filters change the visible rows, and a screenshot is saved."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
from pathlib import Path

import pytest
import yaml
from bs4 import BeautifulSoup
from helpers import repo_config

from diffusion_link.cli import main
from diffusion_link.report import build_report, mark_novel

SYSTEMS = {"raw": "zero-shot, raw audio", "diffusion-link": "zero-shot + Diffusion-Link"}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, demo_store, zero_shot, bridge_export) -> Path:
    """A run folder laid out like the demo's: <run>/artifacts/{caption,bridge}/..."""
    root = tmp_path_factory.mktemp("run") / "artifacts"
    tmp, config = zero_shot
    for sub, bridge in (("raw", "null"), ("diffusion-link", str(bridge_export))):
        args = ["test", "--config", str(config), "--model.init_args.pretrained", str(tmp / "zs" / "export"), "--model.init_args.bridge", bridge]
        main(args + ["--model.init_args.output_dir", str(root / "caption" / "zero-shot" / sub), "--model.init_args.name", SYSTEMS[sub]])
    report = root / "bridge" / "report"
    gap = repo_config(
        "configs/bridge/gap-demo.yaml",
        root.parent,
        {
            "model": {"init_args": {"pretrained": str(bridge_export), "report_dir": str(report), "bootstrap": 50}},
            "data": {"init_args": {"store": str(demo_store), "batch_size": 2}},
            "trainer": {"accelerator": "cpu", "enable_progress_bar": False, "logger": False},
        },
    )
    data = yaml.safe_load(gap.read_text())
    data["model"]["init_args"]["compare"] = {}
    gap.write_text(yaml.safe_dump(data))
    main(["test", "--config", str(gap)])
    shutil.copytree(bridge_export, root / "bridge" / "diffusion-link" / "export")  # an export, for the provenance
    return root


def _page(path: Path) -> BeautifulSoup:
    return BeautifulSoup(path.read_text(encoding="utf-8"), "html.parser")


def test_page_holds_every_clip_system_and_table(tiny_run, demo_store):
    page = build_report(tiny_run)
    assert page == tiny_run / "report" / "index.html"
    soup = _page(page)
    predictions = {}
    for sub, name in SYSTEMS.items():
        with open(tiny_run / "caption" / "zero-shot" / sub / "predictions.csv", encoding="utf-8") as f:
            predictions[name] = {r["clip_id"]: r for r in csv.DictReader(f)}
    clips = list(predictions[SYSTEMS["raw"]])
    rows = soup.select("#clips tr.clip")
    assert [r.select_one(".clip-id").get_text() for r in rows] == clips  # one row per test clip, in order
    for row, clip in zip(rows, clips):
        systems = [td.get_text() for td in row.select("td.sys")]
        assert systems == list(SYSTEMS.values())  # raw audio first
        captions = [re.sub(r"\s*CIDEr-D [0-9.]+$", "", td.get_text()) for td in row.select("td.cap")]
        assert captions == [predictions[name][clip]["candidate"] for name in SYSTEMS.values()]
        assert [li.get_text() for li in row.select("ul.refs li")] == json.loads(predictions[SYSTEMS["raw"]][clip]["references"])
        cider = json.loads(row["data-cider"])  # the filter's data: each system's CIDEr-D on the clip
        assert cider == pytest.approx([float(predictions[name][clip]["cider_d"]) for name in SYSTEMS.values()], abs=1e-5)
    # the captioning table: one row per system with the scores.json numbers and the interval
    table = soup.select("table.caption-table tr")[1:]
    assert [tr.select("td")[1].get_text() for tr in table] == list(SYSTEMS.values())
    scores = json.loads((tiny_run / "caption" / "zero-shot" / "raw" / "scores.json").read_text())["scores"]
    headers = [th.get_text() for th in soup.select("table.caption-table th")]
    cider_cell = table[0].select("td")[headers.index("CIDEr-D")].get_text()
    assert cider_cell.startswith(f"{scores['cider_d']:.4f} ± ")
    # Diffusion-Link vs raw audio: the paired difference of the per-clip CIDEr-D, its interval, the relative change or n/a
    from diffusion_link.report import paired_difference

    cider = {name: {c: float(r["cider_d"]) for c, r in rows.items()} for name, rows in predictions.items()}
    p = paired_difference(cider[SYSTEMS["raw"]], cider[SYSTEMS["diffusion-link"]])
    relative = "n/a" if p.relative() is None else f"{p.relative():+.1%}"
    column = next(i for i, h in enumerate(headers) if h.startswith("CIDEr-D vs raw audio"))
    assert [tr.select("td")[column].get_text() for tr in table] == ["", f"{p.diff:+.3f} [{p.lo:+.3f}, {p.hi:+.3f}] ({relative})"]
    assert "paired bootstrap interval" in soup.select_one("h2#captioning ~ p.notes").get_text()
    assert headers[-5:] == ["right animals", "right (single)", "distinct", "right animals vs raw", "flags"]  # the demo: its manifest's animals
    # the gap table: every method of gap_report.csv, and its figures inline
    with open(tiny_run / "bridge" / "report" / "gap_report.csv") as f:
        methods = [r["method"] for r in csv.DictReader(f)]
    assert [tr.select_one("td").get_text() for tr in soup.select("table.gap-table tr")[1:]] == methods
    figures = soup.select("section.gap-report img")
    assert [img["alt"] for img in figures] == ["gap cosine hist", "gap paired diff", "gap pca"]  # every PNG beside the report
    assert all(img["src"].startswith("data:image/png;base64,") for img in figures)
    # provenance: the encoder, the store's checksum, the export
    facts = {th.get_text(): td.get_text() for th, td in (tr.select("th, td") for tr in soup.select("table.facts tr"))}
    store = json.loads((demo_store / "store.json").read_text())
    assert store["checksum"] in facts["feature store"] and facts["encoder weights"] == store["encoder"]["weights"]
    assert any("bridge/diffusion-link/export" in s.get_text() for s in soup.select("details summary"))
    # nothing from the network: no URL in any attribute, no external script or style
    for tag in soup.find_all(True):
        for attr, value in tag.attrs.items():
            for v in value if isinstance(value, list) else [value]:
                assert not re.match(r"^\s*(https?:|//|ftp:)", str(v)), (tag.name, attr, v)
    assert not soup.select("script[src], link[href]")


def test_audio_is_linked_inside_the_run_and_embedded_outside(tiny_run, tmp_path, tmp_path_factory, monkeypatch):
    soup = _page(build_report(tiny_run))  # the tiny demo's audio lies outside the run's folder
    sources = [a["data-src"] for a in soup.select("#clips audio")]
    assert len(sources) == len(soup.select("#clips tr.clip")) and all(s.startswith("data:audio/ogg;base64,") for s in sources)
    linked = build_report(tiny_run, out=tmp_path / "page", audio="link")
    for audio in _page(linked).select("#clips audio"):
        assert not audio["data-src"].startswith("data:") and (linked.parent / audio["data-src"]).resolve().is_file()
    # run from a folder that holds both the artifacts and the audio (the make targets: data/ beside artifacts/)
    monkeypatch.chdir(tmp_path_factory.getbasetemp())
    for audio in _page(build_report(tiny_run)).select("#clips audio"):
        assert not audio["data-src"].startswith("data:") and (tiny_run / "report" / audio["data-src"]).resolve().is_file()


def test_missing_audio_is_said_on_the_page_and_a_missing_run_is_an_error(tiny_run, tmp_path):
    run = tmp_path / "artifacts"
    shutil.copytree(tiny_run / "caption", run / "caption")
    for scores in run.rglob("scores.json"):  # a store that is gone
        report = json.loads(scores.read_text())
        scores.write_text(json.dumps({**report, "store": str(tmp_path / "gone")}))
    soup = _page(build_report(run))
    assert len(soup.select("#clips .missing")) == len(soup.select("#clips tr.clip")) > 0
    assert not soup.select("#clips audio")
    with pytest.raises(FileNotFoundError, match="no run at"):
        build_report(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="nothing to report"):
        build_report(tmp_path / "empty")


def test_words_no_reference_contains_are_marked():
    pieces = mark_novel("A dog barks, then a Cat meows.", ["a cat meows", "the cat is meowing"])
    assert "".join(text for text, _ in pieces) == "A dog barks, then a Cat meows."
    assert [text for text, novel in pieces if novel] == ["dog", "barks", "then"]


def test_report_command(tiny_run, tmp_path, capsys):
    with pytest.raises(SystemExit) as done:
        main(["report", str(tiny_run), "--out", str(tmp_path / "out"), "--audio", "embed"])
    assert done.value.code == 0 and (tmp_path / "out" / "index.html").is_file()
    assert str(tmp_path / "out" / "index.html") in capsys.readouterr().out


# -- in a real browser --------------------------------------------------------------------------------------


def _chromium():
    chromium, driver = shutil.which("chromium") or shutil.which("chromium-browser"), shutil.which("chromedriver")
    if not (chromium and driver):
        message = "headless Chromium is needed: apt-get install chromium chromium-driver (.ci/run installs them)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1800", "--mute-audio"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(driver), options=options)


DURATIONS = """
const done = arguments[arguments.length - 1];
const players = Array.from(document.querySelectorAll("#clips audio"));
Promise.all(players.map((a) => new Promise((resolve) => {
  if (a.readyState >= 1) return resolve(a.duration);
  a.addEventListener("loadedmetadata", () => resolve(a.duration));
  a.addEventListener("error", () => resolve(-1));
  a.preload = "metadata"; a.load();
}))).then(done);
"""


def visible_rows(browser) -> int:
    return browser.execute_script("return document.querySelectorAll('#clips tr.clip:not([hidden])').length")


def check_in_browser(page: Path, screenshot: Path) -> dict:
    """Open the page in headless Chromium: every player's duration, the rows visible under each filter, a screenshot."""
    browser = _chromium()
    try:
        browser.set_script_timeout(60)
        browser.get(page.resolve().as_uri())
        total = len(browser.find_elements("css selector", "#clips tr.clip"))

        def set_value(element_id: str, value: str) -> int:
            browser.execute_script(
                "const e = document.getElementById(arguments[0]); e.value = arguments[1]; e.dispatchEvent(new Event('input'));", element_id, value
            )
            return visible_rows(browser)

        seen = {"all": set_value("page-size", "0"), "durations": browser.execute_async_script(DURATIONS)}
        seen["disagree"] = set_value("f-disagree", "2")  # at least 2 distinct captions
        seen["agree"] = set_value("f-disagree", "agree")
        seen["most disagree"] = set_value("f-disagree", str(len(browser.find_elements("css selector", "#f-disagree option")) - 1))
        set_value("f-disagree", "all")
        if browser.find_elements("id", "f-cider-min"):  # the predictions carry per-clip CIDEr-D
            seen["cider>=0.5"] = set_value("f-cider-min", "0.5")
            set_value("f-cider-min", "")
        first_word = browser.execute_script("return document.querySelector('#clips ul.refs li').textContent.split(' ').slice(-1)[0]")
        seen["word"] = set_value("f-word", first_word)
        set_value("f-word", "")
        seen["page of 25"] = set_value("page-size", "25")
        browser.execute_script("document.getElementById('next').click()")
        seen["second page of 25"] = visible_rows(browser)
        set_value("page-size", "50")
        browser.save_screenshot(str(screenshot))
        seen["total"] = total
        return seen
    finally:
        browser.quit()


def test_page_plays_and_filters_in_headless_chromium(tiny_run, tmp_path):
    page = build_report(tiny_run)
    seen = check_in_browser(page, tmp_path / "report.png")
    assert seen["all"] == seen["total"] == 3
    assert len(seen["durations"]) == 3 and all(d > 0 for d in seen["durations"]), seen["durations"]  # embedded Ogg copies play
    assert seen["disagree"] + seen["agree"] == seen["total"]
    assert seen["page of 25"] == 3 and 1 <= seen["word"] <= seen["total"]
    assert seen["cider>=0.5"] < seen["total"] or seen["disagree"] < seen["total"] or seen["agree"] < seen["total"]
    assert (tmp_path / "report.png").stat().st_size > 20_000
    linked = build_report(tiny_run, out=tmp_path / "linked", audio="link")  # the tiny demo's FLAC files, by relative path
    seen = check_in_browser(linked, tmp_path / "linked.png")
    assert all(d > 0 for d in seen["durations"]), seen["durations"]


@pytest.mark.slow
def test_the_demos_page_in_headless_chromium(tmp_path):
    """After `make demo`: the demo's own page (100 test clips) plays and filters."""
    page = Path("artifacts/report/index.html")
    if not page.is_file():
        pytest.fail("run `make demo` first: it writes artifacts/report/index.html")
    seen = check_in_browser(page, tmp_path / "demo-report.png")
    assert seen["all"] == seen["total"] == 100 and all(d > 0 for d in seen["durations"])
    assert seen["disagree"] + seen["agree"] == seen["total"] and seen["most disagree"] < seen["disagree"]  # 7 systems: few clips get 7 captions
    assert seen["page of 25"] == seen["second page of 25"] == 25
    assert 0 < seen["cider>=0.5"] < seen["total"]


# -- the captioning table's paired comparisons and flags (written files, no model) ----------------------------


def _system(folder: Path, name: str, values: dict[str, float], captions: dict[str, str] | None = None, **report) -> Path:
    """A caption test's outputs: predictions.csv (per-clip CIDEr-D and ROUGE-L) and scores.json."""
    folder.mkdir(parents=True, exist_ok=True)
    clips = list(values)
    captions = captions or {c: f"caption {i}" for i, c in enumerate(clips)}
    with open(folder / "predictions.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["clip_id", "candidate", "references", "rouge_l", "cider_d"])
        for clip in clips:
            writer.writerow([clip, captions[clip], json.dumps(["a dog barks", "a dog is barking"]), f"{values[clip] / 4:.6g}", f"{values[clip]:.6g}"])
    mean = sum(values.values()) / len(values)
    scores = {"cider_d": mean, "cider_d_lo": mean - 0.1, "cider_d_hi": mean + 0.1, "rouge_l": mean / 4}
    (folder / "scores.json").write_text(json.dumps({"name": name, "mode": "zero-shot", "bridge": None, "input": "audio", "scores": scores, **report}))
    return folder


def _toy_run(root: Path, raw: dict[str, float], other: dict[str, float], **other_report) -> list[Path]:
    return [
        _system(root / "raw", "zero-shot, raw audio", raw),
        _system(root / "dl", "zero-shot + Diffusion-Link", other, **{"bridge": "bridge/diffusion-link/export", **other_report}),
    ]


def _table(folders: list[Path], clip_info: dict | None = None) -> dict:
    from diffusion_link.report import caption_table_rows, read_system

    return caption_table_rows([read_system(f) for f in folders], clip_info)


def test_a_known_difference_gets_a_paired_interval_that_excludes_zero(tmp_path):
    import numpy as np

    from diffusion_link.report import paired_difference

    rng = np.random.default_rng(0)
    clips = [f"clip{i:03d}" for i in range(200)]
    base = dict(zip(clips, rng.gamma(2.0, 1.0, 200)))  # clips differ a lot from one another ...
    other = {c: v + 0.5 + rng.normal(0, 0.1) for c, v in base.items()}  # ... the rows by 0.5 on every clip
    p = paired_difference(base, other)
    assert p.lo < 0.5 < p.hi and p.excludes_zero and p.hi - p.lo < 0.05, p
    assert p.diff == pytest.approx(float(np.mean([other[c] - base[c] for c in clips])))
    # unpaired (each row's own resamples), the same difference is lost in the clips' spread
    alone = paired_difference({c: 0.0 for c in clips}, base)  # the interval of one row's mean alone
    assert alone.hi - alone.lo > 5 * (p.hi - p.lo)
    exact = paired_difference(base, {c: v + 0.5 for c, v in base.items()})  # the same shift on every clip: no doubt at all
    assert exact.lo == pytest.approx(0.5) and exact.hi == pytest.approx(0.5)
    none = paired_difference(base, {c: v + rng.normal(0, 0.1) for c, v in base.items()})
    assert none.lo < 0 < none.hi and not none.excludes_zero
    # on the table: the difference, its interval, the relative change beside it, bold
    row = _table(_toy_run(tmp_path, base, other))["rows"][1]
    cider = paired_difference(*(({c: float(f"{v:.6g}") for c, v in d.items()}) for d in (base, other)))
    assert row["versus"] == f"{cider.diff:+.3f} [{cider.lo:+.3f}, {cider.hi:+.3f}] ({cider.diff / cider.base:+.1%})" and row["bold"]


def test_a_permutation_of_one_rows_predictions_changes_no_paired_interval(tmp_path):
    import numpy as np

    rng = np.random.default_rng(1)
    clips = [f"c{i}" for i in range(50)]
    base, other = dict(zip(clips, rng.random(50) * 3)), dict(zip(clips, rng.random(50) * 3 + 0.2))
    folders = _toy_run(tmp_path / "a", base, other)
    shuffled = dict(sorted(other.items(), key=lambda kv: rng.random()))  # the same clips, another order in the file
    assert list(shuffled) != clips
    permuted = _toy_run(tmp_path / "b", base, shuffled)
    first, second = _table(folders)["rows"][1], _table(permuted)["rows"][1]
    assert first["versus"] == second["versus"] and first["paired"] == second["paired"] and first["versus"]
    # clip sets that differ are not compared
    differ = _toy_run(tmp_path / "c", base, {**{c: other[c] for c in clips[:-1]}, "elsewhere": 1.0})
    table = _table(differ)
    assert table["rows"][1]["versus"] == "clips differ" and "different clips (50 and 50 clips, 49 in common)" in table["warnings"][0]


def test_a_relative_gain_over_a_baseline_indistinguishable_from_zero_is_na(tmp_path):
    clips = [f"c{i}" for i in range(100)]
    near_zero = {c: (0.16 if i % 10 == 0 else 0.0) for i, c in enumerate(clips)}  # mean 0.016 -> 0.018
    table = _table(_toy_run(tmp_path / "a", {c: v / 10 for c, v in near_zero.items()}, {c: v / 10 * 1.125 for c, v in near_zero.items()}))
    assert table["rows"][1]["versus"].endswith("(n/a)")  # 0.0016 -> 0.0018: below the floor
    zero = {c: 0.0 for c in clips}
    table = _table(_toy_run(tmp_path / "b", zero, {c: 0.5 for c in clips}))
    assert table["rows"][1]["versus"] == "+0.500 [+0.500, +0.500] (n/a)" and table["rows"][1]["bold"]  # from exactly 0
    table = _table(_toy_run(tmp_path / "c", {c: 2.0 for c in clips}, {c: 2.5 for c in clips}))
    assert table["rows"][1]["versus"] == "+0.500 [+0.500, +0.500] (+25.0%)"
    assert any("n/a when the raw row's value is indistinguishable from zero" in n for n in table["notes"])


def test_a_captioner_that_ignores_its_input_is_flagged_in_the_table_summary_and_page(tmp_path):
    from diffusion_link.evaluation.captioning import diversity
    from diffusion_link.run.summary import caption_table

    assert diversity(["a dog barks"] * 100)["ignores_input"] and diversity(["a dog barks", "A dog  barks"])["ignores_input"]
    assert diversity([f"{i} dogs bark" for i in range(4)] + ["a dog barks"] * 96)["ignores_input"]  # 5 of 100: at most 5 %
    assert not diversity([f"{i} dogs bark" for i in range(5)] + ["a dog barks"] * 95)["ignores_input"]  # 6 of 100
    assert not diversity(["a dog barks", "a cat meows", "a cat meows"])["ignores_input"]
    clips = [f"c{i}" for i in range(20)]
    root = tmp_path / "artifacts" / "caption"
    folders = _toy_run(root, {c: 1.0 for c in clips}, {c: 1.2 for c in clips})
    _system(root / "dl", "zero-shot + Diffusion-Link", {c: 1.2 for c in clips}, {c: "a dog barks" for c in clips}, bridge="x")
    table = _table(folders)
    assert table["rows"][0]["flags"] == [] and table["rows"][1]["flags"] == ["ignores its input: 1 distinct caption for 20 clips"]
    text = caption_table(folders, None)
    assert "zero-shot + Diffusion-Link (ignores its input)" in text and "WARNING, degenerate results:" in text
    assert "+0.200 [+0.200, +0.200] (+20.0%)" in text  # bold: the interval excludes 0
    soup = _page(build_report(tmp_path / "artifacts"))
    flags = [tr.select("td")[-1].get_text() for tr in soup.select("table.caption-table tr")[1:]]
    assert flags == ["", "ignores its input: 1 distinct caption for 20 clips"]
    assert [td.get_text() for td in soup.select("table.caption-table td.best")] == ["+0.200 [+0.200, +0.200] (+20.0%)"]
    assert [td.get_text() for td in soup.select("table.paired-table tr")[1].select("td")[2:]] == ["+0.050 [+0.050, +0.050]", "+0.200 [+0.200, +0.200]"]


def test_the_text_ceiling_is_not_paired_and_the_legend_says_it_is_scored_leave_one_out(tmp_path):
    from diffusion_link.run.summary import caption_table

    clips = [f"c{i}" for i in range(10)]
    folders = _toy_run(tmp_path, {c: 1.0 for c in clips}, {c: 1.5 for c in clips})
    ceiling = _system(
        tmp_path / "text",
        "zero-shot, text embeddings (ceiling)",
        {c: 3.0 for c in clips},
        input="text embedding of the first reference (ceiling)",
        scored_against="references 2.. of each clip (leave-one-out: reference 1 was the input)",
    )
    table = _table([*folders, ceiling])
    assert [r["system"] for r in table["rows"]][-1] == "zero-shot, text embeddings (ceiling)"
    assert table["rows"][-1]["versus"] == "not paired (leave-one-out)" and all(not c["text"] for c in table["rows"][-1]["paired"])
    assert any("scored against the other references only (leave-one-out" in n for n in table["notes"])
    assert "leave-one-out" in caption_table([*folders, ceiling], None)


def test_the_legend_says_what_each_of_the_fields_baselines_is(tmp_path):
    clips = [f"c{i}" for i in range(10)]
    folders = _toy_run(tmp_path, {c: 1.0 for c in clips}, {c: 1.5 for c in clips})
    assert not any("Diffusion Bridge's captioner" in n or "noise injection" in n or "projection decoding" in n for n in _table(folders)["notes"])
    db = {"train_through": {"bridge": "b", "t_start": 400, "steps": None}, "noise_std": 0.0, "bridge_weights": "raw"}
    folders += [
        _system(tmp_path / "db", "DB's captioner + Diffusion Bridge", {c: 1.1 for c in clips}, bridge="b", captioner_training=db),
        _system(tmp_path / "ni", "noise injection", {c: 1.1 for c in clips}, captioner_training={"noise_std": 0.02}),
        _system(tmp_path / "pd", "projection decoding", {c: 1.1 for c in clips}, bridge="projection-decoding"),
    ]
    notes = " ".join(_table(folders)["notes"])
    assert "noised to t = 400" in notes and "raw (not EMA) weights" in notes and "1-D U-Net" in notes
    assert "N(0, 0.02^2 I)" in notes and "softmax(cos(a, T) / tau)" in notes


def test_right_animals_are_compared_in_pairs_on_the_demo(tmp_path):
    clips = [f"c{i}" for i in range(40)]
    info = {c: {"animals": ["dog"] if i % 2 else ["cat"], "held_out_pair": False} for i, c in enumerate(clips)}
    raw = {c: ("a dog barks" if i < 20 else "a cat meows") for i, c in enumerate(clips)}  # right on 10 of 40
    right = {c: ("a dog barks" if i % 2 else "a cat meows") for i, c in enumerate(clips)}  # right on all 40
    folders = [
        _system(tmp_path / "raw", "zero-shot, raw audio", {c: 1.0 for c in clips}, raw),
        _system(tmp_path / "dl", "zero-shot + Diffusion-Link", {c: 1.0 for c in clips}, right, bridge="x"),
    ]
    table = _table(folders, info)
    assert table["animal_headers"][-1] == "right animals vs raw"
    assert table["rows"][0]["animals"] == ["50%", "50%", "2 / 2", ""]
    animals = table["rows"][1]["animals"]
    assert animals[:3] == ["100%", "100%", "2 / 2"] and animals[3].startswith("+50 [") and animals[3].endswith("] pts") and table["rows"][1]["animals_bold"]
    # the page finds the demo's animals from its store (source "demo"): the manifest beside the audio files
    store = tmp_path / "artifacts" / "stores" / "demo"
    store.mkdir(parents=True)
    (store / "store.json").write_text(json.dumps({"data": {"source": "demo"}, "encoder": {}, "checksum": "x", "rows": 40}))
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "manifest.json").write_text(json.dumps({"clips": info}))
    (store / "audio.csv").write_text("clip_id,split,path\n" + "".join(f"{c},test,{tmp_path}/demo/audio/test/{c}.flac\n" for c in clips))
    for folder in folders:
        shutil.move(folder, tmp_path / "artifacts" / "caption" / folder.name)
    soup = _page(build_report(tmp_path / "artifacts"))
    headers = [th.get_text() for th in soup.select("table.caption-table th")]
    cells = [td.get_text() for td in soup.select("table.caption-table tr")[2].select("td")]
    assert headers[-5:] == ["right animals", "right (single)", "distinct", "right animals vs raw", "flags"] and cells[-5:-1] == animals


def test_a_gap_reports_paired_table_is_a_table_on_the_page_not_text():
    from diffusion_link.report.page import _md_blocks

    text = (
        "Paired difference from raw (row − raw; 95 % interval):\n\n"
        "| method | Fréchet ↓ | MMD² ↓ |\n|---|---:|---:|\n| bridge | **-0.2509 [-0.2787, -0.1609]** | -0.0001 [-0.0003, 0.0002] |\n\n"
        "Intervals: basic bootstrap.\nBold: the paired interval excludes 0."
    )
    blocks = _md_blocks(text)
    assert blocks[0] == {"text": "Paired difference from raw (row − raw; 95 % interval):"}
    assert blocks[1] == {"headers": ["Fréchet ↓", "MMD² ↓"], "rows": [("bridge", [("-0.2509 [-0.2787, -0.1609]", True), ("-0.0001 [-0.0003, 0.0002]", False)])]}
    assert [b["text"] for b in blocks[2:]] == ["Intervals: basic bootstrap.", "Bold: the paired interval excludes 0."]


def test_the_captioning_table_across_seeds_gives_mean_std_and_how_many_seeds_paired_intervals_exclude_zero(tmp_path, capsys):
    import numpy as np

    from diffusion_link.report.seeds import summarise_caption_seeds

    clips = [f"c{i}" for i in range(30)]
    info = {c: {"animals": ["dog"] if i % 2 else ["cat"]} for i, c in enumerate(clips)}
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"clips": info}))
    right = {c: ("a dog barks" if i % 2 else "a cat meows") for i, c in enumerate(clips)}
    gains = {0: 0.5, 1: 0.3, 2: 0.0}  # Diffusion-Link's CIDEr-D gain over raw audio, per seed: two seeds above 0, one not
    folders = []
    for seed, gain in gains.items():
        root = tmp_path / f"seed-{seed}" / "caption"
        raw = {c: 1.0 + 0.1 * seed + (0.2 if i % 3 else 0.0) for i, c in enumerate(clips)}
        _system(root / "zero-shot" / "test" / "raw", "zero-shot, raw audio", raw, {c: "a dog barks" for c in clips})  # right on half
        _system(root / "zero-shot" / "test" / "dl", "zero-shot + Diffusion-Link", {c: v + gain for c, v in raw.items()}, right, bridge="x")
        folders.append(root)
    csv_path, md_path = summarise_caption_seeds(folders, tmp_path / "seeds", manifest)
    rows = {r["row"]: r for r in csv.DictReader(open(csv_path, encoding="utf-8"))}
    dl, raw_row = rows["zero-shot / zero-shot + Diffusion-Link"], rows["zero-shot / zero-shot, raw audio"]
    raw_means = [float(np.mean([1.0 + 0.1 * s + (0.2 if i % 3 else 0.0) for i in range(30)])) for s in gains]
    assert float(raw_row["cider_d_mean"]) == pytest.approx(np.mean(raw_means), abs=1e-5)
    assert float(raw_row["cider_d_std"]) == pytest.approx(np.std(raw_means, ddof=1), abs=1e-5)
    assert float(dl["cider_d_diff_mean"]) == pytest.approx(np.mean(list(gains.values())), abs=1e-5)
    assert float(dl["cider_d_diff_std"]) == pytest.approx(np.std(list(gains.values()), ddof=1), abs=1e-5)
    assert (dl["cider_d_above"], dl["cider_d_below"], dl["seeds"]) == ("2", "0", "3")  # the same shift on every clip: exact intervals
    assert float(dl["right_animals_mean"]) == 1.0 and float(raw_row["right_animals_mean"]) == 0.5
    assert (dl["right_animals_above"], float(dl["right_animals_diff_mean"])) == ("3", 0.5)
    assert raw_row["cider_d_diff_mean"] == "nan"  # the raw row is not compared with itself
    md = md_path.read_text()
    assert "| zero-shot / zero-shot + Diffusion-Link |" in md and "2 / 0 of 3" in md and "3 / 0 of 3" in md and "Mean ± standard deviation over 3 seeds" in md
    # one seed is no spread; seeds that test other rows are refused
    with pytest.raises(ValueError, match="at least two"):
        summarise_caption_seeds(folders[:1], tmp_path / "one")
    shutil.rmtree(folders[2] / "zero-shot" / "test" / "dl")
    with pytest.raises(ValueError, match="compares other methods"):
        summarise_caption_seeds(folders, tmp_path / "other")
    with pytest.raises(SystemExit) as done:
        main(["caption-seeds", *map(str, folders[:2]), "--out", str(tmp_path / "cli")])
    assert done.value.code == 0
    assert "| zero-shot / zero-shot, raw audio |" in capsys.readouterr().out


def test_a_noise_injection_captioner_on_raw_audio_is_compared_with_raw_audio_not_its_baseline(tmp_path):
    # its name sorts before "zero-shot, raw audio": the baseline is chosen by what the captioner is, not by order
    clips = [f"c{i}" for i in range(20)]
    folders = _toy_run(tmp_path, {c: 1.0 for c in clips}, {c: 1.5 for c in clips})
    folders.insert(0, _system(tmp_path / "ni", "zero-shot + noise injection, raw audio", {c: 1.2 for c in clips}, captioner_training={"noise_std": 0.02}))
    rows = {r["system"]: r for r in _table(folders)["rows"]}
    assert rows["zero-shot + noise injection, raw audio"]["versus"].startswith("+0.200")
    assert rows["zero-shot + Diffusion-Link"]["versus"].startswith("+0.500")


def test_the_run_summary_pairs_each_seeds_rows_with_that_seeds_raw_audio_row(tmp_path):
    from types import SimpleNamespace

    from diffusion_link.run.steps import Step
    from diffusion_link.run.summary import summary

    clips = [f"c{i}" for i in range(10)]
    steps = []
    for seed, (raw, dl) in {0: (1.0, 1.2), 1: (2.0, 2.5)}.items():  # seed 1's raw row is far from seed 0's
        tests = tmp_path / f"seed-{seed}" / "caption" / "zero-shot"
        folders = _toy_run(tests / "test", {c: raw for c in clips}, {c: dl for c in clips})
        steps.append(Step(f"caption: test zero-shot (2 rows) (seed {seed})", "caption-test", ["test"], tests, outputs=[f / "scores.json" for f in folders]))
    recipe = SimpleNamespace(run_dir=tmp_path, seeds=[0, 1], path=tmp_path / "r.yaml", data={"class_path": "x.Other"}, gap_report="report")
    text = summary(recipe, steps, [{} for _ in steps], 60.0)
    assert "Captioning, test split (seed 0)" in text and "Captioning, test split (seed 1)" in text
    assert "+0.200 [+0.200, +0.200] (+20.0%)" in text and "+0.500 [+0.500, +0.500] (+25.0%)" in text  # each against its own seed
    assert "-0.800" not in text and "+1.500" not in text  # never seed 1's row against seed 0's raw row, or the reverse


def test_the_report_page_pairs_each_seeds_rows_with_that_seeds_raw_audio_row(tmp_path):
    from diffusion_link.report.page import collect

    clips = [f"c{i}" for i in range(10)]
    for seed, (raw, dl) in {0: (1.0, 1.2), 1: (2.0, 2.5)}.items():
        root = tmp_path / f"seed-{seed}" / "caption" / "zero-shot" / "test"
        _system(root / "raw", "zero-shot, raw audio", {c: raw for c in clips}, seed=seed)
        _system(root / "dl", "zero-shot + Diffusion-Link", {c: dl for c in clips}, bridge="b", seed=seed)
    systems = collect(tmp_path).systems
    assert [(s.setting, s.name) for s in systems] == [
        ("zero-shot (seed 0)", "zero-shot, raw audio"),
        ("zero-shot (seed 0)", "zero-shot + Diffusion-Link"),
        ("zero-shot (seed 1)", "zero-shot, raw audio"),
        ("zero-shot (seed 1)", "zero-shot + Diffusion-Link"),
    ]
    from diffusion_link.report import caption_table_rows

    versus = [r["versus"] for r in caption_table_rows(systems, None)["rows"] if r["versus"]]
    assert versus == ["+0.200 [+0.200, +0.200] (+20.0%)", "+0.500 [+0.500, +0.500] (+25.0%)"]
