"""The LightningCLI that runs a stage (``fit`` / ``validate`` / ``test`` / ``predict`` with a YAML whose
``model.class_path`` picks the stage). Used by the ``diffusion-link`` command (:mod:`diffusion_link.cli`)
and by the demo's steps (:mod:`diffusion_link.pipeline`), which run it in-process with one
:class:`StepProgress` bar each."""

from __future__ import annotations

import sys
import time
from typing import IO

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

    def _open(self, total: int | float | None) -> None:
        from tqdm import tqdm

        self._total = int(total) if total not in (None, float("inf")) else None
        self._done, self._start = 0, time.monotonic()
        self._printed = self._start
        tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._bar = tqdm(total=self._total, desc=self.label, file=self.stream, leave=False, dynamic_ncols=True) if tty and self._enabled else None

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
        self._open(trainer.estimated_stepping_batches)

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


def run(args: list[str] | None = None, description: str | None = None, callbacks: list | None = None, trim_memory: bool = True) -> None:
    """Parse ``args`` (``None``: ``sys.argv``) and run the subcommand; ``description`` heads ``--help``;
    ``callbacks`` are added to those of the config (the demo's progress bar); ``trim_memory``: see
    :func:`release_memory`."""
    import argparse
    import logging
    import warnings

    import lightning as L
    from jsonargparse import DefaultHelpFormatter
    from lightning.pytorch.cli import LightningCLI, SaveConfigCallback

    class HelpFormatter(argparse.RawDescriptionHelpFormatter, DefaultHelpFormatter):
        """jsonargparse's help, with the description's line breaks kept."""

    class DiffusionLinkCLI(LightningCLI):
        def init_parser(self, **kwargs):
            kwargs.setdefault("description", description)
            kwargs.setdefault("formatter_class", HelpFormatter)
            if description:  # the top-level command: its other subcommands are ours, not LightningCLI's
                kwargs.setdefault("usage", "diffusion-link [-h] {fit,validate,test,predict,demo,doctor,report,seeds,sweep} ...")
            return super().init_parser(**kwargs)

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
