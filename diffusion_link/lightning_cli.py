"""The LightningCLI that runs a stage (``fit`` / ``validate`` / ``test`` / ``predict`` with a YAML whose
``model.class_path`` picks the stage). Used by the ``diffusion-link`` command (:mod:`diffusion_link.cli`)
and by the demo's steps (:mod:`diffusion_link.pipeline`), which run it in-process."""

from __future__ import annotations


def run(args: list[str] | None = None, description: str | None = None) -> None:
    """Parse ``args`` (``None``: ``sys.argv``) and run the subcommand; ``description`` heads ``--help``."""
    import lightning as L
    from lightning.pytorch.cli import LightningCLI, SaveConfigCallback

    import argparse

    from jsonargparse import DefaultHelpFormatter

    class HelpFormatter(argparse.RawDescriptionHelpFormatter, DefaultHelpFormatter):
        """jsonargparse's help, with the description's line breaks kept."""

    class DiffusionLinkCLI(LightningCLI):
        def init_parser(self, **kwargs):
            kwargs.setdefault("description", description)
            kwargs.setdefault("formatter_class", HelpFormatter)
            return super().init_parser(**kwargs)

    class SaveConfigBesideLogs(SaveConfigCallback):
        """The resolved config.yaml goes beside a run's logs; a run without a logger (the cache
        stage, predict) writes none, rather than one into the current folder."""

        def setup(self, trainer, pl_module, stage: str) -> None:
            if trainer.logger is not None:
                super().setup(trainer, pl_module, stage)

    DiffusionLinkCLI(
        L.LightningModule,
        L.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        seed_everything_default=0,
        save_config_callback=SaveConfigBesideLogs,
        save_config_kwargs={"overwrite": True},
        args=args,
    )
