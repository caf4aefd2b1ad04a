"""One export format for the trained encoder, the bridges and the captioners: one writer, one reader.

An export is a folder with ``config.json`` and its weight / data files. ``config.json`` holds the
component's own settings (each component decides those keys) and three keys of the format::

    "format": "diffusion-link/<kind>"        # kind: encoder | bridge | captioner
    "format_version": 1
    "files": {"<relative path>": "<sha256>"}  # every other file of the folder, adapter/ included

Writing builds the folder under a temporary sibling name and renames it into place
(:func:`diffusion_link.files.atomic_folder`); tensors go to safetensors. Reading checks the kind and
the checksum of every listed file, on every load: a corrupt, replaced, missing or foreign file is an
:class:`ExportError` that names it and says how to remake the export.

A *bundle* (``diffusion-link bundle``) is a folder of such exports, one subfolder per component, and a
top-level ``config.json`` that names them (``"format": "diffusion-link/bundle"``, each component's
folder and the sha256 of its ``config.json``, the decoding settings); :func:`read_bundle` checks it.
A laion-clap encoder is not copied: ``encoder/config.json`` is then a reference to its checkpoint
(``"format": "diffusion-link/clap-reference"``: the settings and the checkpoint's sha256).

Torch is imported only by :func:`save_tensors` / :func:`load_tensors`: :func:`read_export` (the
checks) runs without it (``diffusion-link doctor``).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from diffusion_link.assets import sha256_file
from diffusion_link.files import atomic_folder, write_json

FORMAT_VERSION = 1
KINDS = ("encoder", "bridge", "captioner")
CONFIG = "config.json"
RESERVED = ("format", "format_version", "files")

#: how each kind of export is made (the fit that exports it)
REMAKE = {
    "encoder": "diffusion-link fit --config configs/encoder/demo.yaml",
    "bridge": "diffusion-link fit --config configs/bridge/demo.yaml",
    "captioner": "diffusion-link fit --config configs/caption/zero-shot.yaml",
}
_ARTICLE = {"encoder": "an", "bridge": "a", "captioner": "a"}


class ExportError(ValueError):
    """An export folder that is not the expected kind, not in this format, or whose files do not match
    their checksums. A ``ValueError``, like the feature store's ``StoreError``."""


class ExportNotFoundError(ExportError, FileNotFoundError):
    """No export there: the folder, or its ``config.json``, is missing."""


def format_tag(kind: str) -> str:
    """``diffusion-link/<kind>``, the value of ``config.json``'s ``format``."""
    if kind not in KINDS:
        raise ValueError(f"export kind must be one of {KINDS}, not {kind!r}")
    return f"diffusion-link/{kind}"


def kind_of(config: Mapping[str, Any]) -> str | None:
    """The kind an export's ``config.json`` declares, or ``None`` (not an export of this format)."""
    tag = str(config.get("format", ""))
    kind = tag.removeprefix("diffusion-link/")
    return kind if tag.startswith("diffusion-link/") and kind in KINDS else None


def _remake(kind: str) -> str:
    return f"re-export it with `{REMAKE[kind]}` (or the config that made it)"


# -- writing ---------------------------------------------------------------------------------------


class Draft:
    """The export being written: its temporary folder, and the settings ``config.json`` will hold."""

    def __init__(self, kind: str, root: Path):
        self.kind, self.root = kind, root
        self.config: dict[str, Any] = {}

    def save_tensors(self, name: str, tensors: Mapping[str, Any], metadata: dict[str, str] | None = None) -> str:
        """Write ``tensors`` to ``name`` (safetensors); returns the file's sha256."""
        return save_tensors(self.root / name, tensors, metadata)


@contextlib.contextmanager
def write_export(folder: str | Path, kind: str) -> Iterator[Draft]:
    """Build an export of ``kind`` at ``folder`` (replaced whole when the block ends without error)::

        with write_export(folder, "bridge") as draft:
            draft.save_tensors("model.safetensors", weights)
            draft.config.update(config=..., encoder=...)

    Every file written under ``draft.root`` is listed with its sha256 in ``config.json``.
    """
    tag = format_tag(kind)
    with atomic_folder(folder) as tmp:  # the folder is the export's own: replaced whole
        draft = Draft(kind, tmp)
        yield draft
        clash = sorted(set(draft.config) & set(RESERVED))
        if clash:
            raise ValueError(f"{kind} export: {clash} are the format's own keys of config.json, not settings")
        files = {p.relative_to(tmp).as_posix(): sha256_file(p) for p in sorted(tmp.rglob("*")) if p.is_file() and p != tmp / CONFIG}
        write_json(tmp / CONFIG, {**draft.config, "format": tag, "format_version": FORMAT_VERSION, "files": files})


def save_tensors(path: str | Path, tensors: Mapping[str, Any], metadata: dict[str, str] | None = None) -> str:
    """Tensors to a safetensors file (detached, on the CPU, contiguous); returns its sha256."""
    from safetensors.torch import save_file

    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(path), metadata=metadata)
    return sha256_file(path)


# -- reading ---------------------------------------------------------------------------------------


def read_export(folder: str | Path, kind: str, required: tuple[str, ...] = ()) -> dict[str, Any]:
    """``config.json`` of the export at ``folder``, once it is checked: it is ``kind``, in this format,
    lists ``required`` files, and every listed file matches its sha256. Raises :class:`ExportError`
    (:class:`ExportNotFoundError` when there is no export there) saying what is wrong and what to do."""
    format_tag(kind)
    folder = Path(folder)
    config_path = folder / CONFIG
    what = f"{_ARTICLE[kind]} {kind} export"
    if not config_path.is_file():
        found = "does not exist" if not folder.exists() else "has no config.json"
        raise ExportNotFoundError(f"{folder} is not {what}: it {found} (an export holds config.json and its weight files); make one with `{REMAKE[kind]}`")
    try:
        config = json.loads(config_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ExportError(f"{config_path} is not valid JSON ({err}): the export is damaged; {_remake(kind)}") from err
    if not isinstance(config, dict):
        raise ExportError(f"{config_path} is not a JSON object: {folder} is not {what}; {_remake(kind)}")
    found_kind, tag = kind_of(config), config.get("format")
    if found_kind is None:
        older = f"format {tag!r}" if tag else "no format tag"
        raise ExportError(
            f"{folder} is not {what} in the current format ({older}; expected {format_tag(kind)!r}, format_version {FORMAT_VERSION}): "
            f"an export written by an older diffusion-link, or another tool's folder; {_remake(kind)}"
        )
    if found_kind != kind:
        raise ExportError(f"{folder} is {_ARTICLE[found_kind]} {found_kind} export ({tag!r}), but {what} was expected here: pass {what} folder")
    version = config.get("format_version")
    if version != FORMAT_VERSION:
        raise ExportError(
            f"{folder}: {what} of format_version {version!r}, but this diffusion-link reads format_version {FORMAT_VERSION}; "
            f"use the diffusion-link that wrote it, or {_remake(kind)}"
        )
    files = config.get("files")
    if not isinstance(files, dict) or not files:
        raise ExportError(f"{config_path} lists no files with their checksums ('files'): the export is damaged; {_remake(kind)}")
    for name in required:
        if name not in files:
            raise ExportError(f"{config_path} does not list {name}, which {what} needs: the export is incomplete; {_remake(kind)}")
    root = folder.resolve()
    for name, expected in sorted(files.items()):
        path = folder / name
        if not path.resolve().is_relative_to(root):
            raise ExportError(f"{config_path} lists {name!r}, a file outside the export folder: refused; {_remake(kind)}")
        if not path.is_file():
            raise ExportError(f"{folder}: {name} is missing (config.json expects sha256 {expected}, found no file); {_remake(kind)}")
        sha = sha256_file(path)
        if sha != expected:
            raise ExportError(
                f"{folder}: {name} does not match the checksum in config.json (corrupt or replaced): expected sha256 {expected}, found {sha}; {_remake(kind)}"
            )
    return config


# -- bundles ---------------------------------------------------------------------------------------

BUNDLE_FORMAT = "diffusion-link/bundle"
CLAP_REFERENCE = "diffusion-link/clap-reference"
#: a bundle's components: the kind of export each holds (the encoder may be a CLAP reference instead)
COMPONENTS = {"encoder": "encoder", "bridge": "bridge", "captioner": "captioner"}
_MAKE_BUNDLE = "make it again with `diffusion-link bundle RUN_DIR --out DIR`"


class BundleError(ExportError):
    """A bundle that is incomplete, damaged, or not a bundle; the message names the part."""


def read_bundle(folder: str | Path) -> dict[str, Any]:
    """A bundle's top-level ``config.json``, once its structure is checked: it is a bundle in this format,
    each component it names is there, and each component's ``config.json`` is the one the bundle was made
    with (its sha256). ``"paths"`` is added: each component's folder (``None`` for a bundle without a
    bridge). The component files themselves are checked by each component's loader (:func:`read_export`)."""
    folder = Path(folder)
    path = folder / CONFIG
    if not path.is_file():
        found = "does not exist" if not folder.exists() else "has no config.json"
        raise BundleError(f"{folder} is not a diffusion-link bundle: it {found}; {_MAKE_BUNDLE}")
    try:
        config = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BundleError(f"{path} is not valid JSON ({err}): the bundle is damaged; {_MAKE_BUNDLE}") from err
    if not isinstance(config, dict) or config.get("format") != BUNDLE_FORMAT:
        what = kind_of(config) if isinstance(config, dict) else None
        hint = f" (it is {_ARTICLE[what]} {what} export: pass the bundle's folder)" if what else ""
        raise BundleError(f"{folder} is not a diffusion-link bundle (no format {BUNDLE_FORMAT!r} in config.json){hint}; {_MAKE_BUNDLE}")
    if config.get("format_version") != FORMAT_VERSION:
        raise BundleError(f"{folder}: bundle format_version {config.get('format_version')!r}, but this diffusion-link reads {FORMAT_VERSION}; {_MAKE_BUNDLE}")
    components = config.get("components")
    if not isinstance(components, dict):
        raise BundleError(f"{path} names no components: the bundle is damaged; {_MAKE_BUNDLE}")
    paths: dict[str, Path | None] = {}
    for name in COMPONENTS:
        entry = components.get(name)
        if entry is None and name == "bridge" and name in components:
            paths[name] = None  # a bundle of the raw-audio captioner
            continue
        if not isinstance(entry, dict) or "path" not in entry:
            raise BundleError(f"{path} does not name its {name} component: the bundle is incomplete; {_MAKE_BUNDLE}")
        sub = folder / entry["path"]
        if not sub.resolve().is_relative_to(folder.resolve()):
            raise BundleError(f"{path}: the {name} component {entry['path']!r} lies outside the bundle: refused; {_MAKE_BUNDLE}")
        if not (sub / CONFIG).is_file():
            raise BundleError(f"{folder}: the {name} component is missing ({entry['path']}/config.json not found); {_MAKE_BUNDLE}")
        sha = sha256_file(sub / CONFIG)
        if sha != entry.get("config_sha256"):
            raise BundleError(
                f"{folder}: {entry['path']}/config.json is not the {name} this bundle was made with (sha256 {sha}, the bundle records "
                f"{entry.get('config_sha256')}): a replaced or edited component; {_MAKE_BUNDLE}"
            )
        paths[name] = sub
    return {**config, "paths": paths}


def load_tensors(folder: str | Path, name: str, device: Any = "cpu") -> dict[str, Any]:
    """The tensors of ``name`` in an export folder (call :func:`read_export` first: it checks the file)."""
    from safetensors.torch import load_file

    return load_file(str(Path(folder) / name), device=str(device))


__all__ = [
    "BUNDLE_FORMAT",
    "BundleError",
    "CLAP_REFERENCE",
    "COMPONENTS",
    "CONFIG",
    "Draft",
    "ExportError",
    "ExportNotFoundError",
    "FORMAT_VERSION",
    "KINDS",
    "format_tag",
    "kind_of",
    "load_tensors",
    "read_bundle",
    "read_export",
    "save_tensors",
    "write_export",
]
