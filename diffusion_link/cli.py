"""``diffusion-link``: one LightningCLI for every stage; the YAML's ``class_path`` picks the stage.

    diffusion-link fit --config configs/encoder/demo.yaml       # stage 0: train the demo's encoder
    diffusion-link predict --config configs/cache/demo.yaml     # stage 1: encoder features -> store
    diffusion-link doctor                                         # which offline assets are here

Any option of the config can be overridden on the command line (``--trainer.devices=2``,
``--model.init_args.encoder.checkpoint=630k-audioset-best.pt``); ``--print_config`` shows the
resolved configuration. Multi-GPU and multi-node runs are Lightning's own strategies
(``--trainer.strategy=ddp --trainer.devices=N --trainer.num_nodes=M``; SLURM is detected).
"""

from __future__ import annotations

import logging
import sys

from diffusion_link.offline import default_offline

DESCRIPTION = """\
Diffusion-Link pipeline. Each stage is a LightningModule chosen by `model.class_path` in a YAML config:

  encoder  diffusion-link fit     --config configs/encoder/demo.yaml         train a CLAP-style encoder
           (the demo's; or fine-tune laion-clap), select on val, export
  cache    diffusion-link predict --config configs/cache/demo.yaml
           frozen encoder -> feature store (store.json + one Arrow dataset per split)
  bridge   diffusion-link fit     --config configs/bridge/demo.yaml          train + export Diffusion-Link
           diffusion-link test    --config configs/bridge/gap-demo.yaml      modality-gap report + figures
           diffusion-link predict --config configs/bridge/predict-demo.yaml  bridged feature store
  caption  diffusion-link fit     --config configs/caption/zero-shot.yaml    LoRA LLM on text embeddings
           diffusion-link test    --config configs/caption/zero-shot.yaml --model.init_args.pretrained=DIR
           diffusion-link predict --config configs/caption/predict.yaml      audio files -> captions.csv

Other commands:
  demo     diffusion-link demo       the whole chain on the embedded demo data, with a summary
  doctor   diffusion-link doctor     lists the offline assets present and how to get the missing ones
  seeds    diffusion-link seeds DIR... --out DIR   mean ± std of the gap table across seeds
  sweep    diffusion-link sweep DIR... --out DIR   gap metrics against a swept setting (t*, K, ...), a plot
  report   diffusion-link report [ARTIFACTS]       the run's HTML page: tables, figures, every test clip to
           listen to with its references and each system's caption (artifacts/report/index.html)

Runs with a logger save their resolved config.yaml beside their logs. See docs/ for each stage's inputs and outputs.
"""


def _quiet_known_warnings() -> None:
    """Warnings our users cannot act on (they come from inside laion-clap and Lightning)."""
    import warnings

    for message in (
        ".*LeafSpec.*",
        ".*torch.meshgrid.*indexing.*",
        "Couldn't infer the batch indices.*",
        ".*does not have many workers.*",
        ".*loss_type=None.*",
    ):
        warnings.filterwarnings("ignore", message=message)


class _Stderr(logging.StreamHandler):
    """A handler that writes to whatever ``sys.stderr`` is when a record comes (the demo sends each step's
    output to its log file; pytest swaps the stream per test)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


class _Format(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        prefix = "diffusion-link" if record.levelno < logging.WARNING else f"diffusion-link {record.levelname}"
        text = f"{prefix}: {record.getMessage()}"
        return text + ("\n" + self.formatException(record.exc_info) if record.exc_info else "")


def _console_logging() -> None:
    """The package's messages: INFO and up, to stderr ("diffusion-link: ..."; warnings say WARNING)."""
    logger = logging.getLogger("diffusion_link")
    if not any(isinstance(h, _Stderr) for h in logger.handlers):
        handler = _Stderr()
        handler.setFormatter(_Format())
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def _report_command(argv: list[str], name: str) -> int:
    """``seeds`` (mean ± std of the gap table across seeds) and ``sweep`` (gap metrics against a swept setting):
    both take gap-report folders and an output folder."""
    import argparse

    from diffusion_link.evaluation.report import plot_sweep, summarise_seeds

    description, reports_help, out_help = {
        "seeds": (
            "Mean ± std across seeds of the gap table: give one gap-report folder per seed (bridges trained with "
            "that seed, e.g. by `make gap-seeds SEEDS='0 1 2'`).",
            "gap-report folders (or gap_report.csv files), one per seed",
            "folder for gap_report_seeds.{csv,md}",
        ),
        "sweep": (
            "Plot the gap metrics against one swept setting (t_start, steps, blocks, ...): give the gap-report folders "
            "of the sweep, named <setting>-<value> (as `make ablations` / `make demo-ablations` write them).",
            "gap-report folders named <setting>-<value>",
            "folder for sweep_<setting>.{png,csv}",
        ),
    }[name]
    parser = argparse.ArgumentParser(prog=f"diffusion-link {name}", description=description)
    parser.add_argument("reports", nargs="+", help=reports_help)
    parser.add_argument("--out", required=True, help=out_help)
    args = parser.parse_args(argv)
    if name == "seeds":
        print(summarise_seeds(args.reports, args.out)[1].read_text())
    else:
        print(f"Sweep plot: {plot_sweep(args.reports, args.out)}")
    return 0


def main(args: list[str] | None = None) -> None:
    """Console entry point (``args=None`` reads ``sys.argv``)."""
    default_offline()
    _quiet_known_warnings()
    _console_logging()
    argv = list(sys.argv[1:] if args is None else args)
    if argv[:1] == ["doctor"]:
        from diffusion_link.doctor import main as doctor

        raise SystemExit(doctor(argv[1:]))
    if argv[:1] == ["demo"]:
        from diffusion_link.pipeline import main as demo

        raise SystemExit(demo(argv[1:]))
    if argv[:1] == ["report"]:
        from diffusion_link.report.page import main as report

        raise SystemExit(report(argv[1:]))
    if argv[:1] in (["seeds"], ["sweep"]):
        raise SystemExit(_report_command(argv[1:], argv[0]))

    from diffusion_link.lightning_cli import run

    run(args, DESCRIPTION)


if __name__ == "__main__":
    main()
