"""The LightningCLI that runs a stage (``fit`` / ``validate`` / ``test`` / ``predict`` with a YAML whose
``model.class_path`` picks the stage), its ``--run_dir`` and resume checkpoint, and the commands that are
not stages (:class:`Tool`) on the same root parser. Used by the ``diffusion-link`` command
(:mod:`diffusion_link.cli`); a step started by ``diffusion-link run`` draws one :class:`StepProgress` bar
on the runner's console."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable, Optional

from lightning.pytorch.callbacks import ProgressBar


class StepProgress(ProgressBar):
    """One progress bar for a whole run (all training steps, or all test / predict batches), written to
    ``stream`` (the console, while the run's own output goes to its log file). On a stream that is not a
    terminal (a CI log, ``make demo > file``) it writes a plain line a minute instead of a bar.

    Lightning allows one progress bar callback; given this one, it replaces the per-epoch bars.
    """

    def __init__(self, label: str, stream: IO[str] | None = None):
        super().__init__()
        self.label, self.stream = label, stream or sys.stderr
        self._bar = None
        self._enabled = True
        self._start: float | None = None
        self.finished: list[tuple[int, int | None]] = []  # (done, total) of each bar closed

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def _open(self, total: int | float | None, done: int = 0) -> None:
        from tqdm import tqdm

        self._total = int(total) if total not in (None, float("inf")) else None
        self._done, self._start = done, time.monotonic()
        self._printed = self._start
        tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._bar = tqdm(total=self._total, initial=done, desc=self.label, file=self.stream, leave=False, dynamic_ncols=True) if tty and self._enabled else None

    def _advance(self) -> None:
        self._done += 1
        if self._bar is not None:
            self._bar.update(1)
        elif self._enabled and (now := time.monotonic()) - self._printed >= 60:  # not a terminal: a line a minute
            total = f"/{self._total}" if self._total else ""
            self.stream.write(f"{self.label}: {self._done}{total} after {(now - self._start) / 60:.1f} min\n")
            self.stream.flush()
            self._printed = now

    def _close(self) -> None:
        if self._start is not None:
            self.finished.append((self._done, self._total))
            self._start = None
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def on_train_start(self, trainer, pl_module) -> None:
        self._open(trainer.estimated_stepping_batches, trainer.global_step)  # a resumed fit: from its restored step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self._advance()

    def on_train_end(self, trainer, pl_module) -> None:
        self._close()

    def on_test_start(self, trainer, pl_module) -> None:
        self._open(sum(trainer.num_test_batches))

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._advance()

    def on_test_end(self, trainer, pl_module) -> None:
        self._close()

    def on_predict_start(self, trainer, pl_module) -> None:
        self._open(sum(trainer.num_predict_batches))

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._advance()

    def on_predict_end(self, trainer, pl_module) -> None:
        self._close()

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self._close()


class _NoTips:
    """Drops Lightning's "💡 Tip: try installing ..." messages."""

    @staticmethod
    def filter(record) -> bool:
        return not str(record.msg).lstrip().startswith("💡")


@dataclass
class Tool:
    """A command of ``diffusion-link`` that is not a Lightning stage (``run``, ``report``, ``doctor``, ...):
    its one-line help, how to add its arguments to a jsonargparse parser, and what runs it (returns the
    exit status)."""

    help: str
    arguments: Callable[[Any], None]
    main: Callable[[Any], int]


#: a stage's folder options that ``--run_dir`` fills when the config leaves them unset
RUN_LAYOUT = {"export_dir": "export", "output_dir": "test", "report_dir": "report"}


def apply_run_dir(config, subcommand: str) -> None:
    """``--run_dir DIR``: one folder for the step, linked to everything under it. Fills what the config
    leaves unset (null): ``trainer.default_root_dir``, the logger's ``save_dir``, the stage's
    ``export_dir`` (``DIR/export``), ``output_dir`` (``DIR/test``) and ``report_dir`` (``DIR/report``); an
    option given explicitly wins. The cache stage's stores go in DIR itself (``DIR/<name>``)."""
    run_dir = config.get("run_dir")
    if not run_dir:
        return
    trainer = config.trainer
    if trainer.get("default_root_dir") is None:
        trainer.default_root_dir = run_dir
    loggers = trainer.get("logger")
    for logger in loggers if isinstance(loggers, list) else [loggers]:
        init = getattr(logger, "init_args", None) if logger is not None and not isinstance(logger, bool) else None
        if init is not None and "save_dir" in init and init.get("save_dir") is None:
            init.save_dir = run_dir
    model = config.get("model")
    init = getattr(model, "init_args", None)
    for key, folder in RUN_LAYOUT.items():
        if init is not None and key in init and init.get(key) is None:
            init[key] = str(Path(run_dir) / folder)
    for callback in trainer.get("callbacks") or []:
        if str(getattr(callback, "class_path", "")).endswith("FeatureStoreWriter"):  # the step's folder is the stores' folder
            callback.init_args.root = run_dir


def _model_init(config, subcommand: str | None):
    """The subcommand's ``model.init_args`` (a namespace; empty dict when there is none)."""
    options = config.get(subcommand) if subcommand else None
    model = options.get("model") if options is not None else None
    init = getattr(model, "init_args", None) if model is not None else None
    return init if init is not None else {}


def progress_callbacks() -> list:
    """The runner's progress line: a step started by ``diffusion-link run`` draws its bar on the runner's console."""
    fd = os.environ.get("DIFFUSION_LINK_PROGRESS_FD")
    if not fd:
        return []
    try:
        stream = os.fdopen(int(fd), "w", buffering=1)
    except OSError:
        return []
    return [StepProgress(os.environ.get("DIFFUSION_LINK_PROGRESS_LABEL", "step"), stream)]


def run(
    args: list[str] | None = None,
    description: str | None = None,
    callbacks: list | None = None,
    trim_memory: bool = True,
    tools: dict[str, Tool] | None = None,
) -> None:
    """Parse ``args`` (``None``: ``sys.argv``) and run the subcommand; ``description`` heads ``--help``;
    ``callbacks`` are added to those of the config; ``tools``: the commands that are not stages, parsed by
    the same root parser (one ``--help``); ``trim_memory``: see :func:`release_memory`."""
    import argparse
    import logging
    import warnings

    import lightning as L
    from jsonargparse import ArgumentParser, DefaultHelpFormatter
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.cli import LightningCLI, SaveConfigCallback

    from diffusion_link.data.resume import RandomState

    tools = tools or {}

    class HelpFormatter(argparse.RawDescriptionHelpFormatter, DefaultHelpFormatter):
        """jsonargparse's help, with the description's line breaks kept."""

    class DiffusionLinkCLI(LightningCLI):
        def init_parser(self, **kwargs):
            kwargs.setdefault("description", description)
            kwargs.setdefault("formatter_class", HelpFormatter)
            if description and kwargs["description"] is description:  # the root parser (python -m diffusion_link too)
                kwargs.setdefault("prog", "diffusion-link")
            return super().init_parser(**kwargs)

        def add_arguments_to_parser(self, parser) -> None:
            parser.add_argument(
                "--run_dir",
                type=Optional[str],
                default=None,
                help="the step's folder: fills trainer.default_root_dir, the logger's save_dir, the stage's export_dir "
                "(DIR/export), output_dir (DIR/test), report_dir (DIR/report) and the cache's store root where the "
                "config leaves them unset; fit also keeps DIR/checkpoints/last.ckpt to resume from",
            )
            parser.add_argument("--checkpoint_every", type=int, default=50, help="with --run_dir, fit saves DIR/checkpoints/last.ckpt every N steps")

        def _parse_ckpt_path(self) -> None:
            """Lightning fills the model's options from ``--ckpt_path``'s saved hyperparameters. Where this run writes
            (``export_dir``, ``output_dir``, ``report_dir``) and what it reads by path or name (the options this command
            gives as strings or mappings: a captioner's ``bridge``, ``pretrained``, ``train_through``, ``rows``, ``name``)
            stay this command's: a run folder copied or moved elsewhere and resumed reads and writes in its new place.
            Settings of other types (a network's config, numbers) come from the checkpoint, as Lightning does."""
            sub = self.config.get("subcommand")
            kept = {k: v for k, v in _model_init(self.config, sub).items() if k in RUN_LAYOUT or isinstance(v, (str, dict))}
            super()._parse_ckpt_path()
            init = _model_init(self.config, sub)
            for key, value in kept.items():
                if key in init:
                    init[key] = value

        def _add_subcommands(self, parser, **kwargs) -> None:
            super()._add_subcommands(parser, **kwargs)
            subcommands = parser._subcommands_action
            for name, tool in tools.items():
                sub = ArgumentParser(prog=f"diffusion-link {name}", description=tool.help, formatter_class=HelpFormatter)
                tool.arguments(sub)
                subcommands.add_subcommand(name, sub, help=tool.help.split("\n")[0])

        def _set_seed(self) -> None:
            if self.config["subcommand"] not in tools:
                super()._set_seed()

        def before_instantiate_classes(self) -> None:
            if self.subcommand not in tools:
                apply_run_dir(self.config[self.subcommand], self.subcommand)

        def instantiate_classes(self) -> None:
            if self.subcommand not in tools:
                super().instantiate_classes()

        def _instantiate_trainer(self, config: dict, callbacks: list):
            """The config's callbacks, plus the resume checkpoint of a fit with a run folder, the random state every fit
            keeps in its checkpoints, and the runner's progress line."""
            extra = []
            options = self.config[self.subcommand]
            if self.subcommand == "fit" and options.get("run_dir") and options.get("checkpoint_every"):
                extra.append(
                    ModelCheckpoint(  # what a stopped fit resumes from (diffusion-link run passes --ckpt_path)
                        dirpath=str(Path(options.run_dir) / "checkpoints"),
                        filename="last",
                        save_last=True,
                        save_top_k=0,
                        every_n_train_steps=options.checkpoint_every,
                        enable_version_counter=False,
                    )
                )
            if self.subcommand == "fit":  # a resumed fit replays the uninterrupted one (diffusion_link.data.resume)
                extra.append(RandomState())
            if config.get("enable_progress_bar") is not False:
                extra += progress_callbacks()
            return super()._instantiate_trainer(config, list(callbacks) + extra)

        def _run_subcommand(self, subcommand: str) -> None:
            if subcommand in tools:
                raise SystemExit(tools[subcommand].main(self.config[subcommand]))
            super()._run_subcommand(subcommand)

        def before_fit(self):  # the stage, its DataModule and the callbacks, connected once before the run
            from diffusion_link.data.wiring import connect

            connect(self.model, self.datamodule, self.trainer.callbacks)

        before_validate = before_test = before_predict = before_fit

    class SaveConfigBesideLogs(SaveConfigCallback):
        """The resolved config.yaml goes beside a run's logs; a run without a logger (the cache
        stage, predict) writes none, rather than one into the current folder."""

        def setup(self, trainer, pl_module, stage: str) -> None:
            if trainer.logger is not None:
                super().setup(trainer, pl_module, stage)

    for handler in logging.getLogger("lightning.pytorch").handlers:  # its advertising tips, not about the run
        if not any(isinstance(f, _NoTips) for f in handler.filters):
            handler.addFilter(_NoTips())
    try:
        with warnings.catch_warnings():
            # run in-process with explicit args (the demo, the tests), LightningCLI warns that sys.argv has others
            warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended to run from within Python")
            DiffusionLinkCLI(
                L.LightningModule,
                L.LightningDataModule,
                subclass_mode_model=True,
                subclass_mode_data=True,
                seed_everything_default=0,
                save_config_callback=SaveConfigBesideLogs,
                save_config_kwargs={"overwrite": True},
                trainer_defaults={"callbacks": list(callbacks)} if callbacks else None,
                args=args,
            )
    finally:
        release_memory(trim_memory)


def release_memory(trim: bool = True) -> None:
    """After a run in this process (the demo's steps, the tests): free its objects and, with ``trim``, hand
    the freed heap back to the system. Without the trim, glibc keeps the fragmented heap of every model
    built so far, and a process that runs many stages grows by hundreds of MB a run (measured: 3 cache
    runs 1.47 -> 1.93 GB, with the trim 1.41 -> 1.43 GB). The trim has a price: the next run faults its
    pages in again (the demo: ~45 s of system time over 18 steps), so the demo, whose peak is one step's,
    does not trim."""
    import ctypes
    import ctypes.util
    import gc

    gc.collect()
    if not trim:
        return
    libc = ctypes.util.find_library("c")
    if libc and hasattr(ctypes.CDLL(libc), "malloc_trim"):  # glibc only
        ctypes.CDLL(libc).malloc_trim(0)
