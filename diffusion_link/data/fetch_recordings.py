"""Fetch the demo's held-out recordings from Debian's ``tuxpaint-stamps-default`` (GPL-2), without root.

    python -m diffusion_link.data.fetch_recordings                       # apt-get download + dpkg-deb, into data/recordings
    python -m diffusion_link.data.fetch_recordings --deb FILE.deb         # a .deb downloaded elsewhere
    python -m diffusion_link.data.fetch_recordings --extra-recordings DIR  # a copy of the stamps folder

Only the sound files the demo uses (:func:`~diffusion_link.data.recordings.tuxpaint_files`), their
``.txt`` descriptions and the package's ``copyright`` are written, with ``SOURCES.json`` (package,
version, licence, where they came from, the sha256 of every file). The files are fetched onto the user's
machine from Debian, never redistributed by this project. ``make recordings`` runs this (and ``make demo``
runs it when the folder is missing).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from diffusion_link.assets import MissingAssetError, sha256_file
from diffusion_link.data.recordings import SOURCES_FILE, TUXPAINT_PACKAGE, TUXPAINT_PREFIX, fetch_hint, recordings_dir, tuxpaint_files
from diffusion_link.files import atomic_folder

LICENCE = "GPL-2 (or later), Copyright 2002-2022 Bill Kendrick; see copyright"
INSTALLED = Path("/usr/share/tuxpaint/stamps")
COPYRIGHT = f"usr/share/doc/{TUXPAINT_PACKAGE}/copyright"


def _wanted() -> list[str]:
    """Paths under the stamps folder to copy: each sound and its description."""
    return [p for rel in tuxpaint_files() for p in (rel, str(Path(rel).with_suffix(".txt")))]


def _from_folder(folder: Path, out: Path) -> dict:
    """Copy the wanted files from a stamps folder (or a folder that holds usr/share/tuxpaint/stamps)."""
    for root in (folder, folder / TUXPAINT_PREFIX):
        if all((root / rel).is_file() for rel in tuxpaint_files()):
            for rel in _wanted():
                if (root / rel).is_file():
                    (out / rel).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(root / rel, out / rel)
            copyright_file = next((p for p in (folder / COPYRIGHT, Path("/") / COPYRIGHT) if p.is_file()), None)
            if copyright_file is not None:
                shutil.copyfile(copyright_file, out / "copyright")
            return {"source": str(folder.resolve()), "version": None}
    missing = [rel for rel in tuxpaint_files() if not (folder / rel).is_file() and not (folder / TUXPAINT_PREFIX / rel).is_file()]
    raise MissingAssetError(f"{folder} lacks {len(missing)} of the recordings the demo needs (first: {missing[0]}); give the package's stamps folder")


def _from_deb(deb: Path, out: Path) -> dict:
    """Extract only the wanted members of a .deb (``dpkg-deb --fsys-tarfile``, read as a stream)."""
    if shutil.which("dpkg-deb") is None:
        raise MissingAssetError(f"dpkg-deb is not on this machine, so {deb} cannot be unpacked; unpack it elsewhere and use --extra-recordings DIR")
    version = subprocess.run(["dpkg-deb", "-f", str(deb), "Version"], capture_output=True, text=True, check=True).stdout.strip()
    members = {f"./{TUXPAINT_PREFIX}{rel}": Path(rel) for rel in _wanted()} | {f"./{COPYRIGHT}": Path("copyright")}
    found = set()
    with subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE) as proc:
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
            for member in tar:
                target = members.get(member.name)
                if target is not None and member.isfile():
                    (out / target).parent.mkdir(parents=True, exist_ok=True)
                    (out / target).write_bytes(tar.extractfile(member).read())
                    found.add(member.name)
    missing = [rel for rel in tuxpaint_files() if f"./{TUXPAINT_PREFIX}{rel}" not in found]
    if missing:
        raise MissingAssetError(f"{deb} lacks {missing[0]} (and {len(missing) - 1} more): is it {TUXPAINT_PACKAGE}?")
    return {"source": deb.name, "version": version}


def _apt_download(into: Path) -> Path:
    """``apt-get download`` the package into ``into`` (no root needed; the apt lists must exist)."""
    if shutil.which("apt-get") is None:
        raise MissingAssetError("apt-get is not on this machine. " + fetch_hint(recordings_dir()))
    done = subprocess.run(["apt-get", "download", TUXPAINT_PACKAGE], cwd=into, capture_output=True, text=True)
    debs = sorted(into.glob(f"{TUXPAINT_PACKAGE}_*.deb"))
    if done.returncode != 0 or not debs:
        raise MissingAssetError(
            f"`apt-get download {TUXPAINT_PACKAGE}` failed ({done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}). "
            "Without apt lists, run `sudo apt-get update` once; without network, see below. " + fetch_hint(recordings_dir())
        )
    return debs[0]


def fetch(out: str | Path | None = None, deb: str | Path | None = None, extra: str | Path | None = None, force: bool = False) -> Path:
    """Put the demo's tuxpaint recordings into ``out`` (default: :func:`recordings_dir`); returns it.

    Sources, first that applies: ``extra`` (a folder), ``deb`` (a .deb file), an installed
    ``/usr/share/tuxpaint/stamps``, ``apt-get download``. Skipped when ``out`` already holds them.
    """
    from diffusion_link.data.recordings import read_sources

    out = recordings_dir(out)
    if not force:
        try:
            read_sources(out)
            return out
        except MissingAssetError:
            pass
    with atomic_folder(out) as tmp, tempfile.TemporaryDirectory() as download:
        if extra is not None:
            origin = _from_folder(Path(extra), tmp)
        elif deb is not None:
            origin = _from_deb(Path(deb), tmp)
        elif all((INSTALLED / rel).is_file() for rel in tuxpaint_files()):
            origin = _from_folder(INSTALLED, tmp)
        else:
            origin = _from_deb(_apt_download(Path(download)), tmp)
            origin["source"] = f"apt-get download {TUXPAINT_PACKAGE} ({origin['source']})"
        files = {rel: sha256_file(tmp / rel) for rel in tuxpaint_files()}
        record = {"package": TUXPAINT_PACKAGE, "licence": LICENCE, **origin, "files": files, "note": "fetched from Debian onto this machine; not redistributed"}
        (tmp / SOURCES_FILE).write_text(json.dumps(record, indent=1, sort_keys=True))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m diffusion_link.data.fetch_recordings", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=None, help="where to put them (default: $DIFFUSION_LINK_RECORDINGS or data/recordings)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--deb", help=f"a downloaded {TUXPAINT_PACKAGE}_*.deb")
    group.add_argument("--extra-recordings", dest="extra", help="a folder holding the package's stamps folder (or a copy of it)")
    parser.add_argument("--force", action="store_true", help="fetch again even when the folder is complete")
    args = parser.parse_args(argv)
    try:
        out = fetch(args.out, args.deb, args.extra, args.force)
    except MissingAssetError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"{len(tuxpaint_files())} recordings of {TUXPAINT_PACKAGE} (GPL-2) in {out}; sha256 and licence in {out / SOURCES_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
