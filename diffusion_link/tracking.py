"""What the stages log beyond scalars (``self.log``): figures and tables of example captions.

TensorBoard is the stages' default logger (the configs' ``trainer.logger``): figures go to its Images
tab, tables to its Text tab (Markdown). Other loggers (``CSVLogger`` and others) keep the scalars and
skip these; the same figures are also written as PNG files where a stage has a report folder. The
learning rate goes to the loggers through :class:`LearningRateMonitor`, which a run without one skips.
"""

from __future__ import annotations

from lightning.pytorch.callbacks import LearningRateMonitor as _LightningLearningRateMonitor
from lightning.pytorch.loggers import TensorBoardLogger as _LightningTensorBoardLogger


def _tensorboards(trainer) -> list:
    from lightning.pytorch.loggers import TensorBoardLogger

    if trainer is None or not trainer.is_global_zero:
        return []
    return [logger.experiment for logger in trainer.loggers if isinstance(logger, TensorBoardLogger)]


def log_figure(trainer, tag: str, figure, close: bool = True) -> None:
    """A matplotlib figure as an image at the trainer's global step (closed afterwards unless ``close`` is False)."""
    for writer in _tensorboards(trainer):
        writer.add_figure(tag, figure, global_step=trainer.global_step, close=False)
    if close:
        import matplotlib.pyplot as plt

        plt.close(figure)


def log_table(trainer, tag: str, header: list[str], rows: list[list[str]]) -> None:
    """A Markdown table (TensorBoard renders it in the Text tab) at the trainer's global step."""
    writers = _tensorboards(trainer)
    if not writers:
        return
    cell = lambda v: str(v).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(map(cell, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(cell, row)) + " |" for row in rows]
    for writer in writers:
        writer.add_text(tag, "\n".join(lines), global_step=trainer.global_step)


class LearningRateMonitor(_LightningLearningRateMonitor):
    """Lightning's ``LearningRateMonitor`` (the configs' ``trainer.callbacks``), which does nothing on a
    run without a logger (``--trainer.logger=false``) instead of stopping it: Lightning's refuses to
    train then ("Cannot use LearningRateMonitor callback with Trainer that has no logger")."""

    _off = False

    def on_train_start(self, trainer, *args, **kwargs) -> None:
        self._off = not trainer.loggers
        if not self._off:
            super().on_train_start(trainer, *args, **kwargs)

    def on_train_batch_start(self, trainer, *args, **kwargs) -> None:
        if not self._off:
            super().on_train_batch_start(trainer, *args, **kwargs)

    def on_train_epoch_start(self, trainer, *args, **kwargs) -> None:
        if not self._off:
            super().on_train_epoch_start(trainer, *args, **kwargs)


class TensorBoardLogger(_LightningTensorBoardLogger):
    """Lightning's ``TensorBoardLogger`` (the configs' ``trainer.logger``) whose ``save_dir`` may be left
    unset: ``--run_dir DIR`` (or a config's ``run_dir``) then puts the logs in ``DIR/<name>/version_N``, so
    that a step's folder is one setting. Without either, ``save_dir`` is the current folder."""

    def __init__(self, save_dir: str | None = None, name: str | None = "logs", **kwargs):
        super().__init__(save_dir if save_dir is not None else ".", name=name, **kwargs)
