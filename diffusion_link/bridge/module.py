"""Stage 2 as a LightningModule: ``fit`` trains a bridge, ``validate``/``test`` run the modality-gap
analysis against the earlier bridges, ``predict`` bridges every clip of a store (with
:class:`~diffusion_link.bridge.writer.BridgedStoreWriter`)."""

from __future__ import annotations

import logging
import re
from dataclasses import asdict, fields
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import CatMetric

from diffusion_link.bridge.baselines import Identity, MeanShift, ProjectionDecoding
from diffusion_link.bridge.losses import cross_sample_loss, eps_equivalent_weight, prediction_loss, topology_loss
from diffusion_link.bridge.model import KEYED_CHUNK, BridgeConfig, DiffusionLink, Sampling
from diffusion_link.data.stage import FeatureStage
from diffusion_link.data.store import StoreError, encoder_mismatch
from diffusion_link.evaluation.degenerate import collapse_flags
from diffusion_link.evaluation.gap import Clips, GapMetrics, cone_cosine, gap_table
from diffusion_link.evaluation.gap_intervals import median_sigma
from diffusion_link.evaluation.gap_notes import interval_note, kernel_note, protocol_note
from diffusion_link.evaluation.gap_spread import SampleSpread, spread_note, write_spread_csv
from diffusion_link.evaluation.gap_versus import check_compare_to, versus_suffix
from diffusion_link.optim import adamw_with_warmup
from diffusion_link.tracking import log_figure

log = logging.getLogger(__name__)

#: the gap table's baseline row: every other row's paired difference is taken from it
RAW = "none (raw audio)"


def _key(name: str) -> str:
    return re.sub(r"[^0-9a-zA-Z_]+", "_", name).strip("_").lower()


class BridgeModule(FeatureStage):
    """Trains and evaluates Diffusion-Link (or, with other loss weights, Diffusion Bridge and ablations).

    Args:
        bridge: the network, diffusion and sampling settings (:class:`BridgeConfig`) of a bridge to train;
            given with ``pretrained`` it is an error (the export fixes them; use ``sampling``).
        denoise_weight: weight of the text denoising loss.
        denoise_weighting: ``uniform`` over t (default), or ``eps-equivalent``: the per-t weight that makes the
            parameterisation's MSE equal the eps MSE (SNR for x0; Diffusion Bridge's recipe).
        cross_weight: weight of the cross-sample prediction loss (0 = Diffusion Bridge); for a regressor
            (``bridge.kind: regressor``) the weight of its MSE to the paired text (denoise_weight must be 0).
        topology_weight: weight of the topology loss.
        topology_max_t: the topology loss sees only the batch items noised to t <= this (default: the
            entry point t*, where the bridge starts at test time; ``timesteps``: every t, the old behaviour).
        lr, weight_decay, warmup_steps: AdamW with linear warm-up.
        name: this bridge's name in reports.
        pretrained: an exported bridge folder to start from / to evaluate (instead of a Lightning checkpoint).
        export_dir: where ``fit`` exports the trained bridge (safetensors + config.json); ``None``: no export.
        compare: other exported bridges for the gap table, ``{name: folder}`` (Diffusion Bridge, ablations).
        report_dir: where ``test`` writes gap_report.{csv,md} and figures (``None``: ``<run_dir>/report``, else ``artifacts/bridge/report``).
        projection_temperature: tau of the projection-decoding baseline.
        support_size: text embeddings of the training split used as its support set (``None``: all).
        probe_seed: seed of the linear probe's cross-fitting folds (by clip) and of the bootstrap resamples.
        bootstrap: resamples of clips for the 95 % intervals of the gap table and the paired intervals of
            each row's difference from raw audio (0: none). Every row gets the same resamples of the same
            clips; each resample recomputes every metric; the cost grows with clips x resamples.
        sampling: overrides of the sampler for evaluation and prediction (:class:`Sampling`), e.g.
            ``{t_start: 400, steps: 10}``; applied to this bridge and to the compared ones, and checked
            like any bridge config when the module is built.
        spread_samples: n, the bridged samples per test clip of the sample-spread table (a stochastic bridge called n
            times, any other row once; docs/method.md, "Sample spread"); 0: no such table.
        compare_to: rows of the gap table (by name, e.g. ``[regressor (no diffusion)]``) that every row is also
            compared with, as with raw audio: the paired interval of the difference (``<metric>_vs_<slug>``);
            a name that is not a row (raw audio, mean shift, projection decoding, ``compare``, ``name``) is refused.
    """

    export_name = "the bridge (EMA weights)"

    def __init__(
        self,
        bridge: BridgeConfig | None = None,
        denoise_weight: float = 1.0,
        denoise_weighting: Literal["uniform", "eps-equivalent"] = "uniform",
        cross_weight: float = 1.0,
        topology_weight: float = 1.0,
        topology_max_t: int | None = None,
        lr: float = 3e-4,
        weight_decay: float = 0.0,
        warmup_steps: int = 100,
        name: str = "Diffusion-Link",
        pretrained: str | None = None,
        export_dir: str | None = None,
        compare: dict[str, str] | None = None,
        report_dir: str | None = None,
        projection_temperature: float = 0.01,
        support_size: int | None = 50_000,
        probe_seed: int = 0,
        bootstrap: int = 1000,
        sampling: Sampling | None = None,
        spread_samples: int = 5,
        compare_to: list[str] | None = None,
    ):
        super().__init__()
        rows = [RAW, "mean shift", "projection decoding", *(compare or {}), name]
        self.compare_to = check_compare_to(compare_to, rows, "the gap table (model.init_args.compare_to)")
        if denoise_weight == cross_weight == 0:
            raise ValueError("denoise_weight and cross_weight are both 0: nothing would train the denoiser")
        self.save_hyperparameters()
        if pretrained and bridge is not None:
            raise ValueError(
                "model.init_args.bridge does not apply to a pretrained bridge (its export fixes the network and the "
                "diffusion); leave bridge out, and change t* or K at test time with model.init_args.sampling"
            )
        self.model = DiffusionLink.from_pretrained(pretrained) if pretrained else DiffusionLink(bridge or BridgeConfig())
        self._override_sampling(self.model)
        config = self.model.config
        if config.kind == "regressor" and not pretrained and (denoise_weight or not cross_weight):
            raise ValueError(
                f"a regressor bridge (bridge.kind: regressor) learns only audio -> paired text (the cross-sample loss without noise): "
                f"set denoise_weight: 0 and cross_weight > 0 (got {denoise_weight} and {cross_weight}); configs/bridge/variants/regressor.yaml"
            )
        self.topology_max_t = topology_max_t or config.t_start
        if denoise_weighting not in ("uniform", "eps-equivalent"):
            raise ValueError(f"denoise_weighting must be 'uniform' or 'eps-equivalent', not {denoise_weighting!r}")
        if not 0 < self.topology_max_t <= config.timesteps:
            raise ValueError(f"topology_max_t must be in 1..{config.timesteps} (timesteps), got {self.topology_max_t}")

    def _override_sampling(self, model: DiffusionLink) -> DiffusionLink:
        sampling = self.hparams.sampling
        if isinstance(sampling, dict):  # from Python rather than the CLI
            allowed = [f.name for f in fields(Sampling)]
            if unknown := set(sampling) - set(allowed):
                raise ValueError(f"sampling accepts {allowed}, not {sorted(unknown)}")
            sampling = Sampling(**sampling)
        if sampling is not None:
            model.config = sampling.apply(model.config)  # an impossible override fails here, before any clip is read
        return model

    # -- data checks (before any work) ------------------------------------------------------------

    def _check_store(self, split: str, fitting: bool) -> None:
        trained_on = {}
        if not fitting:
            if not self.model.encoder:
                log.warning("this bridge records no encoder (untrained?): it is evaluated on %s as it is", self.store.path)
            else:
                trained_on["bridge"] = self.model.encoder
        self.check_store(self.model.config.dim, "set model.init_args.bridge.dim to train a new one", split, trained_on)

    def setup(self, stage: str) -> None:
        if stage == "fit":
            split = self.split("fit")
            self._check_store(split, fitting=True)
            if not self.model.encoder:
                self.model.encoder = dict(self.store.encoder)
                self.model.preprocess.set_means(*self.store.means(split))

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["bridge_encoder"] = self.model.encoder

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.model.encoder = checkpoint.get("bridge_encoder", {})

    # -- training ---------------------------------------------------------------------------------

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        model, hp = self.model, self.hparams
        audio = model.preprocess(batch["audio_embedding"], "audio")
        text = model.preprocess(batch["text_embedding"], "text")
        source = audio if model.config.condition_on_source else None
        if model.config.kind == "regressor":  # no noise, no timestep: the paired text from the audio, in one call
            x0_hat = model.regress(model.denoiser, audio)
            losses = {"cross": prediction_loss(x0_hat, text), **({"topology": topology_loss(x0_hat, text)} if hp.topology_weight else {})}
            return self._total(losses, len(audio))
        t = torch.randint(1, model.config.timesteps + 1, (len(audio),), device=self.device)
        losses, x0_hat = {}, None
        if hp.denoise_weight:
            x_t = model.network_input(model.schedule.q_sample(text, t, torch.randn_like(text)))
            out = model.denoiser(x_t, t, source)
            weight = None
            if hp.denoise_weighting == "eps-equivalent":
                snr = model.schedule.snr()[t].to(out.dtype)
                weight = eps_equivalent_weight(snr, model.config.parameterisation)
            losses["denoise"] = prediction_loss(out, model.schedule.target(x_t, text, t), weight)
            x0_hat = model.schedule.to_x0_eps(x_t, out, t)[0]
        if hp.cross_weight:
            x_t = model.network_input(model.schedule.q_sample(audio, t, torch.randn_like(audio)))
            losses["cross"], x0_hat = cross_sample_loss(model.schedule, x_t, model.denoiser(x_t, t, source), text, t)
        if hp.topology_weight:
            near = t <= self.topology_max_t  # near pure noise the pairing is unrecoverable
            losses["topology"] = topology_loss(x0_hat[near], text[near])
        return self._total(losses, len(audio))

    def _total(self, losses: dict[str, torch.Tensor], batch_size: int) -> torch.Tensor:
        hp = self.hparams
        weights = {"denoise": hp.denoise_weight, "cross": hp.cross_weight, "topology": hp.topology_weight}
        loss = sum(weights[k] * v for k, v in losses.items())
        self.log_dict({f"train/{k}": v for k, v in losses.items()}, batch_size=batch_size)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch_size)
        return loss

    def optimizer_step(self, *args, **kwargs) -> None:
        """The EMA follows every optimizer step, inside it: a checkpoint saved at the end of a batch (Lightning
        runs ModelCheckpoint before the module's own batch-end hook) then holds that step's update, so a fit
        resumed from it makes every update once; updated at the batch's end, a resumed fit lost one per resume."""
        super().optimizer_step(*args, **kwargs)
        self.model.update_ema()

    def configure_optimizers(self):
        hp = self.hparams
        return adamw_with_warmup(self.model.denoiser.parameters(), hp.lr, hp.weight_decay, hp.warmup_steps)

    def export(self, folder: Path) -> Path:
        return self.model.save_pretrained(folder, extra={"training": self._training_record()})

    def _training_record(self) -> dict:
        hp = self.hparams
        return {
            "store": str(self.store.path),
            "store_checksum": self.store.meta.get("checksum"),
            "split": self.split("fit"),
            "precision": str(self.trainer.precision),
            "loss_weights": {"denoise": hp.denoise_weight, "cross": hp.cross_weight, "topology": hp.topology_weight},
            "lr": hp.lr,
            "steps": self.global_step,
            "name": hp.name,
        }

    # -- validation: a quick gap check of this bridge ---------------------------------------------

    def on_validation_start(self) -> None:
        self._val = GapMetrics(probe_seed=self.hparams.probe_seed, mmd_sigma=self._mmd_sigma()).to(self.device)
        self._val_points: dict[str, list[torch.Tensor]] = {"text": [], "audio": [], "bridged": []}

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        bridged = self.model.bridge(batch["audio_embedding"])
        self._val.update(bridged, batch["text_embeddings"], batch["n_refs"])
        for key, x in (("text", batch["text_embeddings"][:, 0]), ("audio", F.normalize(batch["audio_embedding"], dim=-1)), ("bridged", bridged)):
            self._val_points[key].append(x.detach().float().cpu())

    def on_validation_epoch_end(self) -> None:
        self.log_dict({f"val/{k}": v.float() for k, v in self._val.compute().items()}, sync_dist=False)
        if not self.trainer.sanity_checking and self._val_points["text"]:  # this rank's clips: a picture, not a metric
            from diffusion_link.evaluation.report import pca_figure

            points = {k: torch.cat(v).numpy() for k, v in self._val_points.items()}
            log_figure(self.trainer, "val/gap_pca", pca_figure(points["text"], points["audio"], {self.hparams.name: points["bridged"]}))

    # -- test: the gap analysis -------------------------------------------------------------------

    def _methods(self) -> dict[str, nn.Module]:
        store, train = self.store, self.split("fit", "train")
        mean_audio, mean_text = store.means(train)
        support = torch.from_numpy(store.text_matrix(train, self.hparams.support_size))
        methods: dict[str, nn.Module] = {
            RAW: Identity(),
            "mean shift": MeanShift(mean_audio, mean_text),
            "projection decoding": ProjectionDecoding(support, self.hparams.projection_temperature),
        }
        for name, folder in (self.hparams.compare or {}).items():
            other = self._override_sampling(DiffusionLink.from_pretrained(folder))
            if diff := encoder_mismatch(other.encoder, store.encoder):
                raise StoreError(f"compared bridge '{name}' ({folder}) was trained on another encoder: " + "; ".join(diff))
            methods[name] = _Bridged(other)
        methods[self.hparams.name] = _Bridged(self.model)
        return methods

    def _mmd_sigma(self) -> float | None:
        """The one RBF bandwidth of every MMD² this module reports: the median heuristic on (a seeded sample
        of 2,000 of) the training split's text embeddings; ``None`` (each set's own) without a training split."""
        if not hasattr(self, "_sigma"):
            self._sigma = None
            train = self.split("fit", "train")
            if self.data is not None and self.data.store is not None and train in self.store.splits:
                texts = self.store.text_matrix(train, 2000)
                try:
                    self._sigma = median_sigma(torch.from_numpy(texts))
                except ValueError:  # fewer than 2 distinct texts: each set's own
                    self._sigma = None
        return self._sigma

    def on_test_start(self) -> None:
        split = self.split("test")
        self._check_store(split, fitting=False)
        methods = self._methods()  # in table order: baselines, compared bridges, this bridge
        self.methods = nn.ModuleDict({_key(n): m for n, m in methods.items()}).to(self.device)
        self.method_names = {_key(n): n for n in methods}
        self.gap = nn.ModuleDict({k: GapMetrics() for k in self.methods}).to(self.device)  # clips only: gap_table computes
        self.cosines = nn.ModuleDict({k: CatMetric() for k in self.methods}).to(self.device)
        self.points = nn.ModuleDict({k: CatMetric() for k in ("text", "audio", *self.methods)}).to(self.device)
        self.spread = nn.ModuleDict({k: SampleSpread() for k in self.methods}).to(self.device)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        refs, n_refs = batch["text_embeddings"], batch["n_refs"]
        self.points["text"].update(refs[:, 0])
        self.points["audio"].update(F.normalize(batch["audio_embedding"], dim=-1))
        for key, method in self.methods.items():
            out = method(batch["audio_embedding"])
            self.gap[key].update(out, refs, n_refs, key=batch.get("row"), captions=batch.get("captions"))
            x, c = _pairs(out, refs, n_refs)
            self.cosines[key].update((F.normalize(x, dim=-1) * F.normalize(c, dim=-1)).sum(-1))
            self.points[key].update(out)
            if (n := self.hparams.spread_samples) > 0:  # n samples of this clip: the first (seed 0) is the one scored above
                # a stochastic bridge's noise is keyed by the clip and a seed: seeds 1..n-1; any other row
                # (a baseline, a regressor, DDIM from the audio) gives one output per clip: repeat it
                stochastic = isinstance(method, _Bridged) and method.model.stochastic
                draws = [method(batch["audio_embedding"], seed=s) for s in range(1, n)] if stochastic else [out] * (n - 1)
                samples = torch.stack([out, *draws], dim=1)
                self.spread[key].update(samples, refs, n_refs)

    def on_test_epoch_end(self) -> None:
        # every row on the same clips (keyed by store row), the same resamples, probe folds and kernel
        hp = self.hparams
        rows = {name: self.gap[key].synced_clips() for key, name in self.method_names.items()}
        options = dict(bootstrap=hp.bootstrap, seed=hp.probe_seed, probe_seed=hp.probe_seed, mmd_sigma=self._mmd_sigma(), compare_to=self.compare_to)
        results = gap_table(rows, baseline=RAW, **options)
        for key, name in self.method_names.items():
            self.log_dict({f"test/{key}/{k}": float(v) for k, v in results[name].items()}, sync_dist=False)
        # every rank takes part in the synchronisation of the metric states; rank 0 alone writes
        points = {k: v.compute().cpu().numpy() for k, v in self.points.items()}
        cosines = {self.method_names[k]: self.cosines[k].compute().cpu().numpy() for k in self.method_names}
        text = F.normalize(torch.from_numpy(points["text"]).double(), dim=-1)
        text_cone = float(cone_cosine(Clips(text, text, torch.arange(len(text))), torch.ones(1, len(text), dtype=torch.float64))[0])
        for name, flags in collapse_flags({n: points[k] for k, n in self.method_names.items()}, points["text"]).items():
            results[name].update(flags)  # a row collapsed to one point: flagged in the report, the log, the summary, the page
        spread = {name: self.spread[key].compute() for key, name in self.method_names.items()} if hp.spread_samples > 0 else {}
        for key, name in self.method_names.items():
            self.log_dict({f"test/{key}/{k}": float(v) for k, v in spread.get(name, {}).items() if k != "samples"}, sync_dist=False)
        self.gap_results, self.spread_results = results, spread
        if self.trainer.is_global_zero:
            self._write_report(results, text_cone, points, cosines, spread)

    def _write_report(self, results: dict, text_cone: float, points: dict, cosines: dict, spread: dict) -> None:
        from diffusion_link.evaluation.gap_figures import paired_difference_figure, pca_panels
        from diffusion_link.evaluation.report import cosine_figure, format_gap_table, save_figure, write_gap_report

        out = Path(self.hparams.report_dir or "artifacts/bridge/report")
        notes = [
            f"Split: {self.split('test')} of {self.store.path}; encoder weights: {self.store.encoder.get('weights')}.",
            f"Text cone (mean cosine between distinct text embeddings): {text_cone:.4f}.",
            "Probe accuracy 0.5 = audio and text indistinguishable (a linear probe cross-fitted over two folds of clips, "
            "C chosen by cross-validation grouped by clip, balanced accuracy over every clip's held-out prediction). "
            "R@k = audio->text retrieval against every reference; a hit: the clip's best own reference ranks in the top k, "
            "where a reference of another clip with the same caption text as one of the clip's own counts as its own.",
            "Paired cosine averages every (clip, reference) pair; centroid distance, cone, Fréchet, MMD² and the probe "
            "compare the distinct clips' (bridged) audio with all reference texts (MMD² and the centroid distance leave "
            "out same-clip pairs; the centroid distance is the root of the unbiased squared distance, 0 where that is negative).",
            kernel_note(results, f"the '{self.split('fit', 'train')}' split's text embeddings" if self._mmd_sigma() else f"{RAW}'s audio and text"),
            interval_note(RAW, self.hparams.bootstrap),
            protocol_note(self.split("fit", "train")),
            *([spread_note(spread)] if spread else []),
        ]
        write_gap_report(results, out, notes, baseline=RAW, compare_to=self.compare_to)
        if spread:
            write_spread_csv(spread, out)
        panels = pca_panels(points["text"], points["audio"], {n: points[k] for k, n in self.method_names.items()})  # one per row
        figures = [("gap_pca", panels), ("gap_paired_diff", paired_difference_figure(results, RAW)), ("gap_cosine_hist", cosine_figure(cosines))]
        figures += [(f"gap_paired_diff{versus_suffix(n)}", paired_difference_figure(results, n, suffix=versus_suffix(n))) for n in self.compare_to]
        for name, figure in figures:
            save_figure(figure, out / f"{name}.png", close=False)
            log_figure(self.trainer, f"test/{name}", figure)
        print(f"\nModality-gap analysis ({out}):\n{format_gap_table(results)}\n", flush=True)

    # -- predict: bridged embeddings --------------------------------------------------------------

    def on_predict_start(self) -> None:
        for split in self.data.predict_splits:
            self._check_store(split, fitting=False)

    def predict_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> dict:
        return {"row": batch["row"].cpu(), "bridged": self.model.bridge(batch["audio_embedding"]).cpu()}

    def bridge_record(self) -> dict:
        """What a bridged store's store.json records about the bridge."""
        return {
            "name": self.hparams.name,
            "pretrained": self.hparams.pretrained,
            "config": asdict(self.model.config),
            "training": getattr(self.model, "meta", {}).get("training"),
            "encoder": self.model.encoder,
            "keyed_chunk": KEYED_CHUNK,  # the shape keyed bridging samples in: results move by rounding with it
        }


class _Bridged(nn.Module):
    def __init__(self, model: DiffusionLink):
        super().__init__()
        self.model = model

    def forward(self, audio: torch.Tensor, seed: int = 0) -> torch.Tensor:
        return self.model.bridge(audio, seed=seed)


def _pairs(x: torch.Tensor, refs: torch.Tensor, n_refs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every (clip, reference) pair: x repeated per valid reference, and the references."""
    valid = torch.arange(refs.shape[1], device=refs.device)[None] < n_refs[:, None]
    return x[:, None].expand(-1, refs.shape[1], -1)[valid], refs[valid]
