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
Diffusion-Link pipeline: encoder -> cache -> bridge -> caption, one LightningCLI.

A whole run:  diffusion-link run recipes/demo.yaml [NAME=value ...] [--dry-run]   (docs/recipes.md)
One stage:    diffusion-link {fit,validate,test,predict} --config CONFIG [--run_dir DIR] [--key=value ...]
              the YAML's model.class_path picks the stage (configs/encoder, cache, bridge, caption, audiocaps)

`diffusion-link COMMAND --help` shows each command's options. See docs/ for each stage's inputs and outputs.
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


def _seeds_sweep_arguments(name: str):
    reports_help, out_help = {
        "seeds": ("gap-report folders (or gap_report.csv files), one per seed", "folder for gap_report_seeds.{csv,md}"),
        "sweep": ("gap-report folders named <setting>-<value>", "folder for sweep_<setting>.{png,csv}"),
    }[name]

    def arguments(parser) -> None:
        parser.add_argument("reports", nargs="+", help=reports_help)
        parser.add_argument("--out", required=True, help=out_help)

    return arguments


def _seeds(args) -> int:
    from diffusion_link.evaluation.gap_seeds import summarise_seeds

    print(summarise_seeds(args.reports, args.out)[1].read_text())
    return 0


def _caption_seeds_arguments(parser) -> None:
    parser.add_argument("folders", nargs="+", help="one folder of caption tests per seed (e.g. artifacts/seed-0/caption)")
    parser.add_argument("--out", required=True, help="folder for caption_seeds.{csv,md}")
    parser.add_argument("--manifest", help="the demo's manifest.json: adds the right-animals rate and its paired difference")


def _caption_seeds(args) -> int:
    from diffusion_link.report.seeds import summarise_caption_seeds

    print(summarise_caption_seeds(args.folders, args.out, args.manifest)[1].read_text())
    return 0


def _sweep(args) -> int:
    from diffusion_link.evaluation.report import plot_sweep

    print(f"Sweep plot: {plot_sweep(args.reports, args.out)}")
    return 0


def _run_arguments(parser, recipe: bool = True) -> None:
    if recipe:
        parser.add_argument("recipe", help="a recipe YAML (recipes/demo.yaml, recipes/audiocaps.yaml, recipes/smoke.yaml, your own)")
    parser.add_argument(
        "overrides",
        nargs="*",
        default=[],
        help="NAME=value sets a recipe variable (CLAP=/path/630k-audioset-best.pt, DEVICES=4); key.path=value sets a recipe key "
        "(seeds=[0,1,2], steps.bridge.args.trainer.max_steps=50)",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the steps, what each would reuse or rerun and why, and the commands; run nothing")
    parser.add_argument("--summary-only", action="store_true", help="print the summary of the last run")


def _run(args) -> int:
    from diffusion_link.run import run_recipe

    return run_recipe(args.recipe, list(args.overrides or []), args.dry_run, args.summary_only)


def _demo(args) -> int:
    from diffusion_link.run import run_recipe

    return run_recipe("recipes/demo.yaml", list(args.overrides or []), args.dry_run, args.summary_only)


def tools():
    """The commands that are not stages, each parsed by the one root parser."""
    from diffusion_link import bundle, doctor
    from diffusion_link.bridge import fit_check
    from diffusion_link.lightning_cli import Tool
    from diffusion_link.report import page

    return {
        "run": Tool(
            "Run a recipe: every step of the chain, each in its own process, reusing what is unchanged and resuming what was stopped.", _run_arguments, _run
        ),
        "demo": Tool(
            "The embedded demo: the same as `diffusion-link run recipes/demo.yaml` (from the repository's root).",
            lambda p: _run_arguments(p, recipe=False),
            _demo,
        ),
        "report": Tool(page.DESCRIPTION, page.arguments, page.report),
        "bundle": Tool(bundle.DESCRIPTION, bundle.arguments, bundle.main),
        "doctor": Tool("List the offline assets that are present, and how to get the missing ones.", doctor.arguments, doctor.report),
        "seeds": Tool(
            "Mean ± std across seeds of the gap table and of its paired differences (vs raw audio, vs compare_to), beside how "
            "many seeds' interval excludes 0 on the better / worse side: one gap-report folder per seed.",
            _seeds_sweep_arguments("seeds"),
            _seeds,
        ),
        "caption-seeds": Tool(
            "Mean ± std across seeds of the captioning table, beside how many seeds' paired interval vs raw audio excludes 0: "
            "one folder of caption tests per seed.",
            _caption_seeds_arguments,
            _caption_seeds,
        ),
        "bridge-fit": Tool(fit_check.DESCRIPTION, fit_check.arguments, fit_check.main),
        "sweep": Tool(
            "Plot the gap metrics against one swept setting (t_start, steps, ...): gap-report folders named <setting>-<value>.",
            _seeds_sweep_arguments("sweep"),
            _sweep,
        ),
    }


def main(args: list[str] | None = None) -> None:
    """Console entry point (``args=None`` reads ``sys.argv``)."""
    default_offline()
    _quiet_known_warnings()
    _console_logging()
    from diffusion_link.lightning_cli import run

    argv = list(sys.argv[1:] if args is None else args)
    if argv[:1] in (["run"], ["demo"]):  # its flags may come after the overrides (argparse reads them only before)
        argv = argv[:1] + [a for a in argv[1:] if a.startswith("-")] + [a for a in argv[1:] if not a.startswith("-")]
    try:
        run(argv, DESCRIPTION, tools=tools())
    except BaseException as err:
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        if isinstance(err, SIGTERMException):  # Lightning's is a SystemExit without a code: a stopped step must not look finished
            print("diffusion-link: stopped by SIGTERM; nothing half-done was exported", file=sys.stderr, flush=True)
            raise SystemExit(143) from None
        raise


if __name__ == "__main__":
    main()
