"""A captioning row without a name is named by what it is; CaptionWriter always writes its failures list."""

import csv
import json
from types import SimpleNamespace

from diffusion_link.caption import writer as caption_writer
from diffusion_link.caption.labels import row_label


def test_rows_are_named_by_what_they_are(tmp_path):
    export = tmp_path / "diffusion-link" / "export"
    export.mkdir(parents=True)
    (export / "config.json").write_text(json.dumps({"dim": 4, "training": {"name": "Diffusion-Link"}}))
    assert row_label("zero-shot", str(export)) == "zero-shot + Diffusion-Link"
    assert row_label("supervised", None) == "supervised, raw audio"
    assert row_label("zero-shot", "mean-shift") == "zero-shot + mean shift"
    assert row_label("zero-shot", None, "text") == "zero-shot, text embedding (ceiling)"
    (tmp_path / "other" / "export").mkdir(parents=True)  # an export without a name: its folder's
    assert row_label("zero-shot", str(tmp_path / "other" / "export")) == "zero-shot + other"


def test_the_failures_list_is_written_even_when_nothing_failed(tmp_path, monkeypatch):
    out = tmp_path / "captions.csv"
    out.with_name("captions.failures.csv").write_text("path,reason\nold.wav,from an earlier run\n")
    monkeypatch.setattr(caption_writer, "_provenance", lambda module, good, bad: {"captioned": good, "failed": bad})
    writer = caption_writer.CaptionWriter(str(out))
    writer.on_predict_start(None, None)
    writer.write_on_batch_end(None, None, {"id": ["a.wav", "b.wav"], "caption": ["a dog", "a cat"], "error": ["", ""]}, None, None, 0)
    writer.on_predict_end(SimpleNamespace(is_global_zero=True), None)
    with open(out.with_name("captions.failures.csv")) as f:
        assert list(csv.reader(f)) == [["path", "reason"]]  # the earlier run's list is gone
    with open(out) as f:
        assert [r["id"] for r in csv.DictReader(f)] == ["a.wav", "b.wav"]
