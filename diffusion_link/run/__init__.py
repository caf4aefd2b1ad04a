"""One runner for every corpus: ``diffusion-link run RECIPE [NAME=value ...] [--dry-run]``.

A recipe (:mod:`~diffusion_link.run.recipe`) describes a whole run; :func:`~diffusion_link.run.steps.recipe_steps`
turns it into ordinary ``diffusion-link`` commands; :class:`~diffusion_link.run.runner.Runner` runs each in
its own process, reusing, resuming and stopping as its docstring says; the run ends with its report page
and a summary (:mod:`~diffusion_link.run.summary`).
"""

from __future__ import annotations

import os
import shlex
import sys
import time

from diffusion_link.run.recipe import Recipe, RecipeError, load_recipe
from diffusion_link.run.runner import Runner, StepFailed, plan, read_record
from diffusion_link.run.steps import Step, recipe_steps

__all__ = ["Recipe", "RecipeError", "Step", "load_recipe", "recipe_steps", "run_recipe"]


def expected_minutes(recipe: Recipe, step: Step, pace: tuple[float, int] | None = None) -> tuple[float, str] | None:
    """What a step should take: its own last run here (its record's time, even under other settings; not a resumed
    fit's, which is only its remainder), else the recipe's ``steps.<kind>.minutes``, times ``pace``
    (:func:`machine_pace`) when given; None where neither says."""
    record = read_record(recipe, step)
    if record.get("seconds") is not None and not record.get("resumed"):
        return record["seconds"] / 60, "its last run here"
    settings = recipe.steps.get(step.kind)
    if settings is not None and settings.minutes is not None:
        if pace is None:
            return float(settings.minutes), f"the recipe's estimate for a {step.kind} step"
        factor, ran = pace
        return (
            settings.minutes * factor,
            f"the recipe's {settings.minutes:g} min for a {step.kind} step x {factor:.2f}, the pace of the {ran} step(s) recorded in this run folder",
        )
    return None


def machine_pace(recipe: Recipe, planned: list) -> tuple[float, int] | None:
    """How fast this machine runs the recipe's steps against the recipe's estimates (measured on one machine, its
    comments say which): over the steps the plan reuses (so their records are of the current settings) and that ran
    from start to end (a resumed fit's time is only its remainder), their recorded time over the recipe's minutes for
    them; and how many steps that is. The cache step is left out: on a store that exists it only checks it. None when
    no such step has an estimate."""
    took = expected = 0.0
    ran = 0
    for item in planned:
        record, settings = read_record(recipe, item.step), recipe.steps.get(item.step.kind)
        if item.action != "reuse" or item.step.kind == "cache" or settings is None or not settings.minutes:
            continue
        if record.get("status") != "done" or record.get("seconds") is None or record.get("resumed"):
            continue
        took, expected, ran = took + record["seconds"] / 60, expected + settings.minutes, ran + 1
    return (took / expected, ran) if ran else None


def describe_plan(recipe: Recipe, steps: list[Step]) -> str:
    lines = [f"{recipe.path}: {len(steps)} steps under {recipe.run_dir}/"]
    planned = list(plan(recipe, steps))
    total, unknown, pace = 0.0, 0, machine_pace(recipe, planned)
    for i, p in enumerate(planned, 1):
        cost = ""
        if p.action != "reuse":
            expected = expected_minutes(recipe, p.step, pace)
            if expected is None:
                unknown += 1
            else:
                total += expected[0]
                cost = f"  ~{expected[0]:.1f} min ({expected[1]}{'; less, as it resumes' if p.action == 'resume' else ''})"
        lines.append(f"  [{i:2d}] {p.action:6} {p.step.name}  ({p.why}){cost}")
        lines.append(f"         $ diffusion-link {shlex.join(p.step.command)}")
    lines.append(f"Expected: about {total:.1f} min of steps" + (f", plus {unknown} step(s) with no estimate" if unknown else "") + ".")
    return "\n".join(lines)


def run_recipe(path: str, overrides: list[str] | None = None, dry_run: bool = False, summary_only: bool = False) -> int:
    """The ``run`` command; returns the exit status (0, 1 for a failed step, 128 + n for signal n)."""
    try:
        recipe = load_recipe(path, overrides)
    except RecipeError as err:
        print(f"diffusion-link run: {err}", file=sys.stderr)
        return 2
    steps = recipe_steps(recipe)
    if dry_run:
        from diffusion_link.run.checks import check_inputs

        problems = 0
        print("Inputs:")
        for ok, note in check_inputs(recipe, steps):
            print(f"  {'ok     ' if ok else 'PROBLEM'} {note}")
            problems += not ok
        print(describe_plan(recipe, steps))
        if problems:
            print(f"\ndiffusion-link run: {problems} input problem(s) above; the run would stop at the step that needs them", file=sys.stderr)
        return 1 if problems else 0
    start = time.time()
    first_task = os.environ.get("SLURM_PROCID", "0") == "0"  # under srun every task runs the steps; one writes the page
    again = " ".join(["diffusion-link run", shlex.quote(path), *map(shlex.quote, overrides or [])])
    if not summary_only:
        try:
            Runner(recipe, steps, rerun_hint=f" (`{again}`)").run()
        except StepFailed as err:
            print(f"\ndiffusion-link run: {err}", file=sys.stderr, flush=True)
            return err.code
        from diffusion_link.report.page import build_report

        if not first_task:
            return 0
        try:
            build_report(recipe.run_dir)  # the page a person reads and listens to (cheap: always rebuilt)
        except (OSError, ValueError, KeyError) as err:  # every step is done and kept; only the page is missing
            print(f"diffusion-link run: WARNING the report page was not built ({err}); `diffusion-link report {recipe.run_dir}` tries again", file=sys.stderr)
    from diffusion_link.run.summary import summary

    print(summary(recipe, steps, [read_record(recipe, s) for s in steps], time.time() - start), flush=True)
    return 0
