"""Stage 3 as a LightningModule: ``fit`` tunes the projector and LoRA adapter, ``test`` captions the
test split and scores the whole corpus once with aac-metrics, ``predict`` captions a store or a
folder of audio files (CLAP -> bridge -> LLM)."""

from __future__ import annotations

import json
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F

from diffusion_link.caption.inputs import FITTED, MEAN_SHIFT, PROJECTION, Bridges, TestRow, TrainThrough, rng_state, rng_stream, training_record
from diffusion_link.caption.labels import row_label
from diffusion_link.caption.bundled import bundle_settings
from diffusion_link.caption.chain import caption_embeddings, caption_waves
from diffusion_link.caption.model import CaptionerConfig, CaptionModel, DecodingOptions
from diffusion_link.caption.samples import SampleCaptions, write_table
from diffusion_link.caption.scoring import TRAINING_RECORD, MetricOptions, score_row
from diffusion_link.data.stage import FeatureStage
from diffusion_link.data.store import StoreError, encoder_mismatch
from diffusion_link.distributed import gather_unique
from diffusion_link.encoder import ClapConfig, load_encoder
from diffusion_link.files import write_atomic
from diffusion_link.optim import adamw_with_warmup
from diffusion_link.tracking import log_table

__all__ = ["MEAN_SHIFT", "PROJECTION", "CaptionerModule", "MetricOptions", "TestRow", "TrainThrough"]


class CaptionerModule(FeatureStage):
    """LoRA-tuned LLM captioner over CLAP embeddings, zero-shot or supervised.

    Args:
        captioner: LLM, projector, prompt and LoRA settings (:class:`CaptionerConfig`).
        mode: ``zero-shot`` trains on CLAP *text* embeddings of the captions (no audio);
            ``supervised`` trains on the paired *audio* embeddings (through the bridge when one is given).
        bridge: an exported Diffusion-Link folder applied to audio embeddings (frozen), at test and
            predict time and, in supervised mode, in training. ``None``: raw audio (the baseline).
            ``mean-shift``: the training-free baseline a - mean(audio) + mean(text), means of the
            store's training split; ``projection-decoding``: DeCap / DRCap's decoding without retrieval,
            softmax(cos(a, T) / tau) @ T over the training split's text embeddings T.
        test_input: ``audio`` (default) or ``text``: feed the text embedding of each clip's first
            reference instead of its audio, the ceiling that a perfect bridge could reach (scored leave-one-out).
        noise_std: zero-shot mode: Gaussian noise N(0, noise_std^2 I) added to each unit training text
            embedding, not re-normalised (CapDec's injection; WSAC's for audio).
        train_through: zero-shot mode: pass every training text embedding through a bridge's chain first
            (:class:`TrainThrough`, Diffusion Bridge's captioner recipe: noised to ``t_start`` 400, DDIM back).
        bridge_weights: ``ema`` (default) or ``raw``: the weights every bridge of this captioner is loaded
            with (Diffusion Bridge's recipe augments and infers with the raw, not EMA, weights).
        projection_temperature, support_size: tau and the support set size (training texts) of ``projection-decoding``.
        decoding: beam search / greedy settings.
        lr, weight_decay, warmup_steps: AdamW over the projector and the adapter, linear warm-up.
        lr_schedule: after the warm-up, ``constant`` (DRCap's recipe) or ``cosine`` decay to zero at
            the trainer's last step.
        name: this system's name in reports; ``None``: what the row is (``zero-shot + Diffusion-Link``,
            ``supervised, raw audio``, ``zero-shot, text embedding (ceiling)``: :func:`~diffusion_link.caption.labels.row_label`).
        pretrained: a saved captioner folder to start from / to evaluate.
        export_dir: where ``fit`` saves adapter + projector + config; ``None``: no export.
        output_dir: where ``test`` writes predictions.csv and scores.json (``None``: ``<run_dir>/test``, else ``artifacts/caption/test``).
        metrics: aac-metrics files (:class:`MetricOptions`).
        clap: the CLAP settings used when ``predict`` gets audio files (must match the training store's encoder).
        encoder_export: instead of ``clap``, a trained encoder's export folder (the demo's encoder).
        val_examples: clips of the first validation batch captioned at each validation, logged as a
            table (clip, first reference, caption) to TensorBoard's Text tab; 0: none.
        bundle: a bundle folder (``diffusion-link bundle``) instead of ``pretrained``, ``bridge`` and
            ``encoder_export`` / ``clap`` (``clap.checkpoint`` may still say where its laion-clap checkpoint is
            here); its decoding settings replace ``decoding`` (configs/caption/predict-bundle.yaml).
        rows: ``test`` several rows of the captioning table in one run (``{key: TestRow}``), instead of the
            one row that ``name``, ``bridge`` and ``test_input`` describe: each row is written to
            ``<output_dir>/<key>/`` and sees the random stream it would see alone, so its result equals a
            one-row run's; the LLM, the imports and the METEOR scorer are loaded once.
        caption_samples: n, captions per test clip and row, one per bridged sample (1: the one caption of the
            table, nothing more). With n > 1 each row's scores.json gets ``caption_samples`` (CIDEr-D of sample 1,
            the mean and best over the n, the diversity of a clip's captions) and ``samples.csv``, and
            ``<output_dir>/caption_diversity.{md,csv}`` compares the rows with the clips' first n references
            (:mod:`diffusion_link.caption.samples`).
        compare_to: a bridge setting (an export folder, e.g. the regressor's): recorded in each row's scores.json, so
            that the captioning table also pairs every row with its setting's row tested through that bridge
            (:mod:`diffusion_link.report.versus`); the recipe's ``compare_to`` sets it.
    """

    export_name = "the captioner (peft adapter + projector + config)"
    reads_audio_files = True  # predict: a folder of audio files (AudioFolderDataModule), through the encoder

    def __init__(
        self,
        captioner: CaptionerConfig = CaptionerConfig(),
        mode: Literal["zero-shot", "supervised"] = "zero-shot",
        bridge: str | None = None,
        test_input: Literal["audio", "text"] = "audio",
        noise_std: float = 0.0,
        train_through: TrainThrough | None = None,
        bridge_weights: Literal["ema", "raw"] = "ema",
        projection_temperature: float = 0.01,
        support_size: int | None = 50_000,
        decoding: DecodingOptions = DecodingOptions(),
        lr: float = 1e-4,
        weight_decay: float = 0.0,
        warmup_steps: int = 100,
        lr_schedule: Literal["constant", "cosine"] = "constant",
        name: str | None = None,
        pretrained: str | None = None,
        export_dir: str | None = None,
        output_dir: str | None = None,
        metrics: MetricOptions = MetricOptions(),
        clap: ClapConfig | None = None,
        encoder_export: str | None = None,
        val_examples: int = 8,
        rows: dict[str, TestRow] | None = None,
        bundle: str | None = None,
        caption_samples: int = 1,
        compare_to: str | None = None,
    ):
        super().__init__()
        if bundle:  # its components replace the exports' settings
            if pretrained or bridge or encoder_export:
                raise ValueError("give a bundle, or the exports (pretrained, bridge, encoder_export), not both")
            given = clap.checkpoint if isinstance(clap, ClapConfig) else (clap or {}).get("checkpoint")
            resolved = bundle_settings(bundle, given)
            pretrained, bridge, clap, encoder_export, decoding, bridge_weights = (
                resolved[k] for k in ("pretrained", "bridge", "clap", "encoder_export", "decoding", "bridge_weights")
            )
        if mode not in ("zero-shot", "supervised"):
            raise ValueError(f"mode must be 'zero-shot' or 'supervised', not {mode!r}")
        if caption_samples < 1:
            raise ValueError(f"caption_samples is the number of captions per test clip (1: one, the table's), not {caption_samples}")
        if lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"lr_schedule must be 'constant' or 'cosine', not {lr_schedule!r}")
        self.save_hyperparameters()
        if bundle:  # the hyperparameters say what was loaded (LightningCLI gives save_hyperparameters its own parsed values)
            loaded = dict(pretrained=pretrained, bridge=bridge, clap=clap, encoder_export=encoder_export, decoding=decoding, bridge_weights=bridge_weights)
            self.hparams.update(loaded)
        # the CLI may hand nested options over as dicts
        self.decoding = decoding if isinstance(decoding, DecodingOptions) else DecodingOptions(**decoding)
        self.metric_options = metrics if isinstance(metrics, MetricOptions) else MetricOptions(**metrics)
        if isinstance(captioner, dict):
            captioner = CaptionerConfig.from_dict(captioner)
        self.model = CaptionModel.from_pretrained(pretrained) if pretrained else CaptionModel(captioner)
        self.encoder_description = getattr(self.model, "meta", {}).get("encoder", {})
        if test_input not in ("audio", "text"):
            raise ValueError(f"test_input must be 'audio' or 'text', not {test_input!r}")
        self.rows = {k: r if isinstance(r, TestRow) else TestRow(**r) for k, r in (rows or {}).items()}
        for key, row in self.rows.items():
            if row.input not in ("audio", "text"):
                raise ValueError(f"rows.{key}.input must be 'audio' or 'text', not {row.input!r}")
        if isinstance(train_through, dict):
            train_through = TrainThrough(**train_through)
        if (train_through or noise_std) and mode != "zero-shot":
            raise ValueError("noise_std and train_through change the text a zero-shot captioner trains on; set mode: zero-shot or leave them out")
        self.train_through = train_through
        # every bridge this captioner uses, one frozen module per folder; the baselines are fitted on the store
        settings = [bridge, *(r.bridge for r in self.rows.values()), *([train_through.bridge] if train_through else [])]
        self.bridges = Bridges(settings, bridge_weights, projection_temperature, support_size)
        self.strict_loading = False  # checkpoints hold only what trains (projector + adapter), not the frozen LM
        self.audio_encoder = None  # loaded for predict on audio files (data_needs)

    # -- inputs ------------------------------------------------------------------------------------

    def _audio(self, audio: torch.Tensor, bridge: str | None | object = ..., keyed: bool = True) -> torch.Tensor:
        """The audio embedding the LLM sees: through ``bridge`` (a setting: an export folder, a fitted baseline
        or None; default the module's own ``bridge``), else raw (normalised). ``keyed``: :meth:`Bridges.forward`."""
        return self.bridges(audio, self.hparams.bridge if bridge is ... else bridge, keyed=keyed)

    def _through(self, setting: str | None):
        """``setting``'s bridge as the chain takes it (:mod:`diffusion_link.caption.chain`)."""
        return partial(self.bridges, setting=setting)

    def _check_store(self, fitting: bool) -> None:
        store = self.store
        uses = [self.hparams.bridge] if fitting or not self.rows else [r.bridge for r in self.rows.values()]
        bridges = self.bridges.loaded(uses + ([self.train_through.bridge] if fitting and self.train_through else []))
        if bridges and "bridge" in store.meta:
            raise StoreError(f"{store.path} is already a bridged store; do not also pass a bridge to the captioner")
        trained_on = {f"bridge {b.source}" if len(bridges) > 1 else "bridge": b.encoder for b in bridges}
        if not fitting and self.encoder_description:
            trained_on["captioner"] = self.encoder_description
        self.check_store(self.model.config.dim, "model.init_args.captioner.dim", trained_on=trained_on)
        if any(u in FITTED for u in uses):
            self.bridges.fit(store, self.split("fit", "train"), uses)
            self.bridges.fitted.to(self.device)
        if fitting:
            self.encoder_description = dict(store.encoder)

    def data_needs(self) -> dict:
        """Audio files (AudioFolderDataModule) are decoded at the rate of the encoder that embeds them; a
        DataModule of audio asks for it, and only then is that encoder loaded."""
        return {"sample_rate": self._audio_sample_rate}

    def _audio_sample_rate(self) -> int:
        if self.audio_encoder is None:
            self._load_encoder()
        return self.audio_encoder.sample_rate

    def connect_data(self, data) -> None:
        super().connect_data(data)
        if data.store is None and self.audio_encoder is None:  # audio files, from a DataModule that did not ask the rate
            self._load_encoder()

    def setup(self, stage: str) -> None:
        if stage == "fit":
            self._check_store(fitting=True)

    # -- training ----------------------------------------------------------------------------------

    def _training_input(self, batch: dict) -> torch.Tensor:
        if self.hparams.mode == "zero-shot":
            text = F.normalize(batch["text_embedding"].float(), dim=-1)
            if self.train_through is not None:
                text = self.train_through.apply(self.bridges.module(self.train_through.bridge), text)
            if self.hparams.noise_std:  # CapDec: noise on the unit embedding, not re-normalised
                text = text + self.hparams.noise_std * torch.randn_like(text)
            return text
        return self._audio(batch["audio_embedding"], keyed=False)  # fresh noise every step: Bridges.forward

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self.model.loss(self._training_input(batch), batch["caption"])
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["caption"]))
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        """Teacher-forced loss of the first reference, on the input the model will see at test time; the
        first batch's clips are also captioned, for a table of examples."""
        inputs = self._audio(batch["audio_embedding"])
        loss = self.model.loss(inputs, [refs[0] for refs in batch["captions"]])
        self.log("val/loss", loss, prog_bar=True, batch_size=len(batch["captions"]), sync_dist=True)
        n = self.hparams.val_examples
        if batch_idx == 0 and n and not self.trainer.sanity_checking:
            captions = self.model.generate(inputs[:n], self.decoding)
            rows = [[clip, refs[0], caption] for clip, refs, caption in zip(batch["clip_id"], batch["captions"], captions)]
            log_table(self.trainer, "val/examples", ["clip", "reference", "caption"], rows)

    def configure_optimizers(self):
        params = [p for p in self.model.parameters() if p.requires_grad]
        hp = self.hparams
        total = int(self.trainer.estimated_stepping_batches) if hp.lr_schedule == "cosine" else None
        return adamw_with_warmup(params, hp.lr, hp.weight_decay, hp.warmup_steps, total)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        trainable = {n for n, p in self.named_parameters() if p.requires_grad}
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in trainable}
        checkpoint["captioner_encoder"] = self.encoder_description

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.encoder_description = checkpoint.get("captioner_encoder", {})

    def export(self, folder: Path) -> Path:
        return self.model.save_pretrained(folder, extra=self._record())

    def _record(self) -> dict:
        hp = self.hparams
        return {
            "mode": hp.mode,
            "bridge": hp.bridge,
            "noise_std": hp.noise_std,
            "train_through": asdict(self.train_through) if self.train_through else None,
            "bridge_weights": hp.bridge_weights,
            "encoder": self.encoder_description,
            "store": str(self.store.path),
            "split": self.split("fit"),
            "precision": str(self.trainer.precision),
            "steps": self.global_step,
            "name": hp.name or row_label(hp.mode, hp.bridge, hp.test_input),
        }

    # -- test: caption the split, score the corpus once ---------------------------------------------

    def _test_rows(self) -> dict[str | None, TestRow]:
        """The rows this test makes: ``rows``, or the one row of ``name``/``bridge``/``test_input`` (key None)."""
        hp = self.hparams
        return dict(self.rows) or {None: TestRow(hp.name or row_label(hp.mode, hp.bridge, hp.test_input), hp.bridge, hp.test_input)}

    def on_test_start(self) -> None:
        self._check_store(fitting=False)
        rows = self._test_rows()
        self._results: dict[str | None, list[tuple[str, str, list[str]]]] = {key: [] for key in rows}
        self._samples = SampleCaptions(self.hparams.caption_samples, rows, torch.initial_seed())  # used when caption_samples > 1
        # every row starts from the random state a one-row run would have, and keeps its own stream
        self._rng = {key: rng_state(self.device) for key in rows}

    def test_step(self, batch: dict, batch_idx: int) -> None:
        for key, row in self._test_rows().items():
            with rng_stream(self._rng, key, self.device):
                if row.input == "text":  # the ceiling: the first reference's own text embedding (normalised)
                    candidates = caption_embeddings(self.model, self.decoding, batch["text_embeddings"][:, 0], self._through(None))
                else:
                    candidates = caption_embeddings(self.model, self.decoding, batch["audio_embedding"], self._through(row.bridge))
            self._results[key] += list(zip(batch["clip_id"], candidates, batch["captions"]))
            if self.hparams.caption_samples > 1:  # samples 2..n on seeded generators: the row's random stream is left as it was
                audio = None if row.input == "text" else batch["audio_embedding"]
                self._samples.add(key, lambda x: self.model.generate(x, self.decoding), self.bridges, audio, batch["clip_id"], row.bridge, candidates)

    def on_test_epoch_end(self) -> None:
        out = Path(self.hparams.output_dir or "artifacts/caption/test")
        table = {}
        for key, row in self._test_rows().items():
            results = gather_unique(self._results[key], key=lambda r: r[0])
            samples = gather_unique(self._samples.captions[key], key=lambda r: r[0]) if self.hparams.caption_samples > 1 else None
            if self.trainer.is_global_zero:
                report = self._score(results, row, out if key is None else out / key, (key, samples))
                scores = report["scores"]
                if samples:
                    table[row.name] = report["caption_samples"]
                prefix = "test/" if key is None else f"test/{key}/"
                self.log_dict({prefix + k: v for k, v in scores.items()}, rank_zero_only=True)
                if key is None:
                    self.scores = scores
        if table:
            write_table(table, [r[2] for r in results], self.hparams.caption_samples, out)

    def _score(self, rows: list[tuple[str, str, list[str]]], row: TestRow, out: Path, samples: tuple = (None, None)) -> dict:
        m, ceiling = self.metric_options, row.input == "text"
        scores, skipped, spread, scored = score_row(rows, row.name, ceiling, out, m)
        store = self.store
        report = {
            "name": row.name,
            "scores": scores,
            "skipped_metrics": skipped,
            "mode": self.hparams.mode,
            "bridge": row.bridge,
            "input": "text embedding of the first reference (ceiling)" if ceiling else "audio",
            "scored_against": "references 2.. of each clip (leave-one-out: reference 1 was the input)" if ceiling else "every reference",
            "diversity": spread,
            "captioner": self.hparams.pretrained,
            "llm": self.model.config.llm,
            "decoding": asdict(self.decoding),
            "seed": torch.initial_seed(),
            "store": str(store.path),
            "split": self.split("test"),
            "encoder_weights": store.encoder.get("weights"),
            # protocol: what each part was trained on (the captioner's and the bridge's export records)
            "captioner_training": {k: getattr(self.model, "meta", {}).get(k) for k in TRAINING_RECORD},
            "bridge_training": training_record(self.bridges.module(row.bridge)),
            "precision": str(self.trainer.precision),
            "clips": [r[0] for r in rows],
            "compare_to": self.hparams.compare_to,
        }
        if samples[1]:  # caption_samples > 1: the row's n captions per clip, samples.csv (caption/samples.py)
            report["caption_samples"] = self._samples.record(*samples, report["clips"], scored, scores.get("cider_d"), m.cache_path, out)
        write_atomic(out / "scores.json", json.dumps(report, indent=2, ensure_ascii=False))
        print(
            f"\nCaptioning scores ({row.name}, {len(rows)} clips): "
            + ", ".join(f"{k} {v:.4f}" for k, v in scores.items())
            + f"\n  -> {out}/predictions.csv, scores.json",
            flush=True,
        )
        return report

    # -- predict: a store or a folder of audio files -------------------------------------------------

    def _load_encoder(self) -> None:
        """The encoder that turns audio files into embeddings: it must be the one the store had."""
        hp = self.hparams
        if hp.clap is None and not hp.encoder_export:
            raise ValueError(
                "captioning audio files needs the encoder the captioner was trained with: "
                "model.init_args.encoder_export (a trained encoder) or model.init_args.clap (laion-clap)"
            )
        self.audio_encoder = load_encoder(hp.clap, hp.encoder_export)
        if isinstance(self.audio_encoder, torch.nn.Module):
            self.audio_encoder.to(self.device)
        own = self.bridges.loaded([self.hparams.bridge])
        expected = self.encoder_description or (own[0].encoder if own else {})
        if expected and (diff := encoder_mismatch(expected, self.audio_encoder.describe())):
            raise StoreError("the encoder given for prediction is not the one the captioner/bridge was trained with: " + "; ".join(diff))

    def on_predict_start(self) -> None:
        if self.data is None or self.data.store is not None:
            self._check_store(fitting=False)

    def predict_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> dict:
        bridge = self._through(self.hparams.bridge)
        if "waves" in batch:  # audio files: encoder -> bridge -> LLM, as AudioCaptioner captions them
            captions = caption_waves(self.audio_encoder, batch["waves"], self.model, self.decoding, bridge)
            return {"id": batch["path"], "caption": [c or "" for c in captions], "error": batch["error"]}
        captions = caption_embeddings(self.model, self.decoding, batch["audio_embedding"], bridge)
        return {"id": batch["clip_id"], "caption": captions, "error": [""] * len(captions)}
