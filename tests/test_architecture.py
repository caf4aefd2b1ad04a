"""The package's layering (docs/architecture.md), checked on the source with the standard library's
``ast``: a module imports only from its own sub-package or from a lower layer, so there is no cycle;
inside a sub-package, pure math stays free of Lightning and only ``module.py`` (the LightningModule)
sits above its siblings."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "diffusion_link"

#: lowest first; a sub-package or module may import only from strictly lower layers (and from itself)
LAYERS = [
    {"files"},  # atomic writes
    {"__init__", "assets", "optim", "distributed", "tracking", "offline"},  # foundations: versions, asset paths, small helpers, logging figures
    {"export"},  # the export format of the encoder, bridges and captioners (files + checksums)
    {"evaluation"},  # metrics and reports (gap, captioning)
    {"encoder"},  # the encoders: laion-clap, the trained contrastive encoder, its stage
    {"data"},  # sources, feature store, DataModules
    {"cache", "bridge"},  # stage 1 and stage 2
    {"caption"},  # stage 3 (applies a bridge)
    {
        "lightning_cli",
        "doctor",
        "report",
        "bundle",
        "api",
    },  # running a stage; the asset check; the run's HTML page; a run's bundle; AudioCaptioner over a bundle
    {"run"},  # recipes and their runner: every step of a run, each a diffusion-link command in its own process
    {"cli"},  # the command
    {"__main__"},  # python -m diffusion_link (how the runner starts a step)
]
LAYER = {name: i for i, names in enumerate(LAYERS) for name in names}


def _unit(path: Path) -> str:
    """The top-level unit a file belongs to: its sub-package, or the module's own name."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return parts[0]


def _imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "diffusion_link" and node.level == 0:
            parts = node.module.split(".")
            if len(parts) > 1:
                yield node.lineno, parts[1]
            else:  # from diffusion_link import assets / __version__
                yield from ((node.lineno, a.name if (PACKAGE / f"{a.name}.py").exists() or (PACKAGE / a.name).is_dir() else "__init__") for a in node.names)
        elif isinstance(node, ast.Import):
            yield from ((node.lineno, a.name.split(".")[1]) for a in node.names if a.name.startswith("diffusion_link."))


def test_every_unit_has_a_layer():
    units = {_unit(p) for p in PACKAGE.rglob("*.py")}
    assert units <= set(LAYER), f"add {sorted(units - set(LAYER))} to LAYERS (and docs/architecture.md)"


def test_no_import_reaches_up_or_sideways():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        unit = _unit(path)
        for line, target in _imports(path):
            if target != unit and LAYER[target] >= LAYER[unit]:
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line} ({unit}, layer {LAYER[unit]}) imports {target} (layer {LAYER[target]})")
    assert not wrong, "imports against the layering:\n" + "\n".join(wrong)


# -- inside a sub-package ------------------------------------------------------------------------------

#: pure tensor math: tested without Lightning, usable without it
PURE = ["bridge/schedule.py", "bridge/losses.py", "bridge/network.py", "evaluation/gap.py", "evaluation/gap_measures.py"]
#: the top of each sub-package: the LightningModule and the Lightning callback that writes its output
TOP = {"module", "writer"}


def _modules(path: Path):
    """Every module ``path`` imports (absolute names, relative imports resolved), with its line."""
    package = ["diffusion_link", *path.relative_to(PACKAGE).parent.parts]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, a.name) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[: len(package) - node.level + 1] + [node.module or ""]).strip(".") if node.level else node.module
            yield from ((node.lineno, f"{base}.{a.name}") for a in node.names)  # `from x import y`: y may be a module


def test_pure_math_imports_neither_lightning_nor_a_lightning_module():
    wrong = [
        f"diffusion_link/{name}:{line} imports {target}"
        for name in PURE
        for line, target in _modules(PACKAGE / name)
        if target.split(".")[0] in ("lightning", "pytorch_lightning") or (target.startswith("diffusion_link.") and set(target.split(".")[2:3]) & TOP)
    ]
    assert not wrong, "pure math must not need Lightning:\n" + "\n".join(wrong)


def test_no_sibling_imports_the_lightning_module_or_the_writer():
    """``module.py`` may import its siblings (``writer.py`` included); no sibling imports ``module.py`` or
    ``writer.py`` (``__init__.py``, the package's face, re-exports them)."""
    wrong = []
    for path in sorted(PACKAGE.glob("*/*.py")):
        if path.stem in ("module", "__init__"):
            continue
        own = f"diffusion_link.{path.parent.name}."
        for line, target in _modules(path):
            if target.startswith(own) and target.removeprefix(own).split(".")[0] in TOP - {path.stem}:
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {target}")
    assert not wrong, "only __init__.py may import a sub-package's module.py / writer.py:\n" + "\n".join(wrong)
