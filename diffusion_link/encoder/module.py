"""The encoder stage as a LightningModule: train a two-tower contrastive audio-text encoder.

    diffusion-link fit      --config configs/encoder/demo.yaml   # train on train, select on val, export
    diffusion-link validate --config configs/encoder/demo.yaml --model.init_args.pretrained=artifacts/encoder/demo/export
    diffusion-link test     --config configs/encoder/demo.yaml --model.init_args.pretrained=artifacts/encoder/demo/export

Loss: laion-clap's own ``ClipLoss`` (symmetric InfoNCE, gathered across DDP ranks) with CLAP's
learnable temperature, clamped at 100 as CLAP does. Validation and test report audio->text and
text->audio recall@1/5/10 with their chance levels, and the gap metrics of the bridge stage on
(clip, first reference) pairs. The checkpoint with the best val recall is exported.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import lightning as L
import torch
from torch import nn

from diffusion_link.encoder.contrastive import ContrastiveEncoder
from diffusion_link.encoder.towers import AudioTower, LogMelCNN, SentenceEncoderText, TextTower
from diffusion_link.evaluation.degenerate import recall_flags
from diffusion_link.evaluation.gap import GapMetrics, TextToAudioRecall
from diffusion_link.files import write_atomic
from diffusion_link.optim import adamw_with_warmup
from diffusion_link.tracking import log_figure

log = logging.getLogger(__name__)
MAX_LOGIT_SCALE = math.log(100.0)


class EncoderModule(L.LightningModule):
    """Contrastive audio-text encoder (CLAP-style), trained on an audio source's clips and captions.

    Args:
        audio: the audio tower (``class_path``): :class:`~diffusion_link.encoder.towers.LogMelCNN`
            (default) or :class:`~diffusion_link.encoder.towers.ClapAudio`.
        text: the text tower: :class:`~diffusion_link.encoder.towers.SentenceEncoderText` (default,
            frozen all-MiniLM-L6-v2 + projection) or :class:`~diffusion_link.encoder.towers.ClapText`.
        temperature: initial τ of the learnable temperature.
        augment: training augmentation (random crop, and the audio tower's own: gain, noise, SpecAugment).
        lr, weight_decay, warmup_steps: AdamW with a linear warm-up, then a cosine decay over the run.
        seed: seed of the crops and augmentation (the same seed gives the same encoder).
        pretrained: an export folder to evaluate (``validate``/``test``) or to start from.
        export_dir: where ``fit`` exports the best (val) checkpoint; ``None``: no export.
        probe_seed: seed of the gap metrics' linear probe.
        output_dir: where ``test`` writes ``scores.json`` (recall, chance, gap metrics, provenance).
    """

    def __init__(
        self,
        audio: AudioTower | None = None,
        text: TextTower | None = None,
        temperature: float = 0.07,
        augment: bool = True,
        lr: float = 2e-3,
        weight_decay: float = 1e-4,
        warmup_steps: int = 20,
        seed: int = 0,
        pretrained: str | None = None,
        export_dir: str | None = None,
        probe_seed: int = 0,
        output_dir: str | None = None,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["audio", "text"])
        if pretrained:
            if audio is not None or text is not None:
                raise ValueError("give either pretrained (an export folder) or the towers (audio, text), not both")
            self.encoder = ContrastiveEncoder.from_pretrained(pretrained)
        else:
            self.encoder = ContrastiveEncoder(audio or LogMelCNN(), text or SentenceEncoderText(), temperature)
        if self.encoder.audio.dim != self.encoder.text.dim:
            raise ValueError(f"the towers disagree on the joint dimension: audio {self.encoder.audio.dim}, text {self.encoder.text.dim}")
        self.loss_fn: nn.Module | None = None
        self.data = None  # what the DataModule serves, once connected (connect_data)

    # -- setup ---------------------------------------------------------------------------------------

    def data_needs(self) -> dict:
        """What the stage needs from its data (``diffusion_link.data.connect`` passes it on): the audio
        tower's fixed preprocessing, applied once per clip, and the rate it expects."""
        return {"sample_rate": self.encoder.sample_rate, "features": self.encoder.audio.features}

    def connect_data(self, data) -> None:
        """What the DataModule serves (a ``diffusion_link.data.ConnectedData``): the split of each stage
        and the description of the data, which the export records."""
        if data is None or data.kind != "clips":
            found = data.datamodule if data is not None else "no DataModule that connects"
            raise TypeError(f"the encoder stage reads clips with captions: data.class_path must be diffusion_link.data.ClipCaptionDataModule (got {found})")
        self.data = data

    def setup(self, stage: str) -> None:
        if stage != "fit":
            return
        from diffusion_link.encoder.laion_import import import_laion_clap

        import_laion_clap()  # laion-clap puts its folder on sys.path: its package is ``clap_module``
        from clap_module.loss import ClipLoss

        self.loss_fn = ClipLoss(gather_with_grad=True, rank=self.trainer.global_rank, world_size=self.trainer.world_size)

    def _generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(self.hparams.seed * 1_000_003 + self.global_step)

    def _audio_batch(self, feats: list[torch.Tensor], train: bool) -> torch.Tensor:
        tower, gen = self.encoder.audio, self._generator() if train else None
        batch, lengths = tower.collate([tower.crop(f, gen if self.hparams.augment else None) for f in feats])
        if train and self.hparams.augment:
            batch = tower.augment(batch, lengths, gen)
        return self.encoder.embed_audio(batch.to(self.device), lengths.to(self.device))

    # -- training ------------------------------------------------------------------------------------

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        audio = self._audio_batch(batch["features"], train=True)
        text = self.encoder.embed_text(batch["caption"])
        scale = self.encoder.logit_scale.exp()
        loss = self.loss_fn(audio, text, scale)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(audio))
        self.log("train/temperature", 1 / scale, batch_size=len(audio))
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        with torch.no_grad():  # CLAP clamps the logit scale at 100
            self.encoder.logit_scale.clamp_(0, MAX_LOGIT_SCALE)

    def configure_optimizers(self):
        hp = self.hparams
        params = [p for p in self.encoder.parameters() if p.requires_grad]
        return adamw_with_warmup(params, hp.lr, hp.weight_decay, hp.warmup_steps, int(self.trainer.estimated_stepping_batches))

    # -- evaluation -----------------------------------------------------------------------------------

    def _start_eval(self) -> None:
        self._metrics = nn.ModuleDict(
            {
                "gap": GapMetrics(probe_seed=self.hparams.probe_seed),
                "t2a": TextToAudioRecall(),
            }
        ).to(self.device)
        self._clips = 0
        self._points: dict[str, list[torch.Tensor]] = {"text": [], "audio": []}

    def _eval_step(self, batch: dict) -> None:
        audio = self._audio_batch(batch["features"], train=False)
        n_refs = torch.tensor([len(c) for c in batch["captions"]], device=self.device)
        flat = self.encoder.embed_text([c for caps in batch["captions"] for c in caps])
        refs = torch.zeros(len(audio), int(n_refs.max()), self.encoder.dim, device=self.device)
        starts = torch.cumsum(n_refs, 0) - n_refs
        for i, (s, n) in enumerate(zip(starts.tolist(), n_refs.tolist())):
            refs[i, :n] = flat[s : s + n]
        self._metrics["gap"].update(audio, refs, n_refs)
        self._metrics["t2a"].update(audio, refs, n_refs)
        self._clips += len(audio)
        self._points["text"].append(refs[:, 0].detach().float().cpu())
        self._points["audio"].append(audio.detach().float().cpu())

    def _end_eval(self, prefix: str) -> dict[str, float]:
        gap = self._metrics["gap"].compute()
        values = {f"{prefix}/{k}": v for k, v in gap.items() if not k.startswith("R@")}
        values.update({f"{prefix}/a2t_{k}": v for k, v in gap.items() if k.startswith("R@")})
        values.update({f"{prefix}/t2a_{k}": v for k, v in self._metrics["t2a"].compute().items()})
        values[f"{prefix}/mean_R@1"] = (values[f"{prefix}/a2t_R@1"] + values[f"{prefix}/t2a_R@1"]) / 2
        clips = int(self.trainer.strategy.reduce(torch.tensor(float(self._clips), device=self.device), reduce_op="sum"))
        values[f"{prefix}/chance_R@1"] = torch.tensor(1.0 / max(clips, 1))
        values = {k: float(v) for k, v in values.items()}
        self.log_dict(values, sync_dist=False)
        return values

    def on_validation_epoch_start(self) -> None:
        self._start_eval()

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch)

    def on_validation_epoch_end(self) -> None:
        self._end_eval("val")
        if not self.trainer.sanity_checking and self._points["text"]:  # this rank's clips: the gap, to look at
            from diffusion_link.evaluation.report import pca_figure

            text, audio = (torch.cat(self._points[k]).numpy() for k in ("text", "audio"))
            log_figure(self.trainer, "val/gap_pca", pca_figure(text, audio, {}))

    def on_test_epoch_start(self) -> None:
        self._start_eval()

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch)

    def on_test_epoch_end(self) -> None:
        values = self._end_eval("test")
        if self.trainer.is_global_zero and self.hparams.output_dir:
            import json

            out = Path(self.hparams.output_dir)
            out.mkdir(parents=True, exist_ok=True)
            report = {
                "scores": values,
                "split": self.data.splits["test"] if self.data is not None else None,
                "encoder": self.encoder.describe() if self.encoder.weights_sha256 else None,
                "trained_on": self.encoder.meta.get("trained_on"),
                "selected_on": self.encoder.meta.get("selected_on"),
                "flags": recall_flags(values),  # recall not above chance (evaluation/degenerate.py)
            }
            write_atomic(out / "scores.json", json.dumps(report, indent=2, default=str))
        if self.trainer.is_global_zero:
            chance = values["test/chance_R@1"]
            print(
                f"\nEncoder, test split ({round(1 / chance)} clips): audio->text R@1 {values['test/a2t_R@1']:.3f}, "
                f"text->audio R@1 {values['test/t2a_R@1']:.3f} (chance {chance:.3f}); paired cosine "
                f"{values['test/paired_cosine']:.3f}; modality probe {values['test/probe_accuracy']:.3f}",
                flush=True,
            )
            for flag in recall_flags(values):  # degenerate: the run goes on, the summary and the page say so
                log.warning(flag)

    # -- export -----------------------------------------------------------------------------------------

    def on_fit_end(self) -> None:
        if not self.hparams.export_dir or self.trainer.interrupted:
            return
        callback = self.trainer.checkpoint_callback
        best = getattr(callback, "best_model_path", "") if callback is not None else ""
        meta = {"trained_on": self.data.description if self.data is not None else None, "steps": self.global_step, "seed": self.hparams.seed}
        if best and Path(best).is_file() and callback.monitor and callback.best_model_score is not None:  # a checkpoint that selects
            state = torch.load(best, map_location=self.device, weights_only=False)["state_dict"]
            self.load_state_dict(state)
            meta.update(selected_on=f"{callback.monitor} ({callback.mode}) = {float(callback.best_model_score):.4f}", checkpoint=str(best))
        if self.trainer.is_global_zero:
            folder = self.encoder.save_pretrained(self.hparams.export_dir, meta)
            log.info("Exported the encoder to %s", folder)
            print(f"Encoder exported to {folder} ({meta.get('selected_on', 'last step')})", flush=True)
        self.trainer.strategy.barrier("encoder-export")


__all__ = ["EncoderModule"]
