"""Writes ``predict``'s captions to a CSV (one row per clip or file, unreadable files reported)."""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import asdict
from pathlib import Path

from lightning.pytorch.callbacks import BasePredictionWriter

from diffusion_link.distributed import gather_unique

log = logging.getLogger(__name__)


class CaptionWriter(BasePredictionWriter):
    """Args:
    output: the CSV to write (columns ``id, caption``; ``id`` is the clip id or the file path); an
        existing file is overwritten. Beside it, written by every run: ``<name>.failures.csv`` (every input
        that could not be captioned, with the reason; only its header when none failed, so a list from an
        earlier run never stays beside new captions) and ``<name>.json``, the provenance (encoder, bridge, captioner,
        decoding, counts), so a CSV never travels without what made it.
    """

    def __init__(self, output: str = "artifacts/caption/captions.csv"):
        super().__init__(write_interval="batch")
        self.output = Path(output)
        self._rows: list[tuple[str, str, str]] = []

    def on_predict_start(self, trainer, pl_module) -> None:
        self._rows = []

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0) -> None:
        self._rows += list(zip(prediction["id"], prediction["caption"], prediction["error"]))

    def on_predict_end(self, trainer, pl_module) -> None:
        rows = gather_unique(self._rows, key=lambda r: r[0])
        if not trainer.is_global_zero:
            return
        self.output.parent.mkdir(parents=True, exist_ok=True)
        good = [r for r in rows if not r[2]]
        with open(self.output, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["id", "caption"])
            writer.writerows((r[0], r[1]) for r in good)
        bad = [r for r in rows if r[2]]
        with open(self.output.with_name(self.output.stem + ".failures.csv"), "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["path", "reason"])
            writer.writerows((r[0], r[2]) for r in bad)
        for path, _, reason in bad:
            log.warning("skipped %s: %s", path, reason)
        self.output.with_suffix(".json").write_text(json.dumps(_provenance(pl_module, len(good), len(bad)), indent=2, default=str))
        print(
            f"Captions: {self.output} ({len(good)} captioned, {len(bad)} unreadable" + (f", listed in {self.output.stem}.failures.csv" if bad else "") + ")",
            flush=True,
        )


def _provenance(module, captioned: int, failed: int) -> dict:
    hp = module.hparams
    encoder = module.audio_encoder.describe() if module.audio_encoder is not None else module.store.encoder
    return {
        "captioned": captioned,
        "failed": failed,
        "encoder": encoder,
        "captioner": hp.pretrained,
        "captioner_trained_on_encoder": module.encoder_description,
        "bridge": hp.bridge,
        "llm": module.model.config.llm,
        "decoding": asdict(module.decoding),
        "package_version": _version(),
    }


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("diffusion-link")
    except PackageNotFoundError:
        return "unknown"
