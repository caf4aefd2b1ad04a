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
    dl = json.loads((tiny_run / "caption" / "zero-shot" / "diffusion-link" / "scores.json").read_text())["scores"]
    versus = f"{(dl['cider_d'] - scores['cider_d']) / scores['cider_d']:+.1%}" if scores["cider_d"] else ""
    assert [tr.select("td")[-1].get_text() for tr in table] == ["", versus]  # Diffusion-Link vs raw audio
    # the gap table: every method of gap_report.csv, and its figures inline
    with open(tiny_run / "bridge" / "report" / "gap_report.csv") as f:
        methods = [r["method"] for r in csv.DictReader(f)]
    assert [tr.select_one("td").get_text() for tr in soup.select("table.gap-table tr")[1:]] == methods
    figures = soup.select("section.gap-report img")
    assert len(figures) == 2 and all(img["src"].startswith("data:image/png;base64,") for img in figures)
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
