"""Shared fixtures. Every test runs offline: hub look-ups fail at once, and a socket connection to
anything but this machine fails the test (the audit hook below)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.update({"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})
# Converted tokenizers are derived files; keep them in one place across the session.
os.environ.setdefault("DIFFUSION_LINK_HOME", str(Path(__file__).resolve().parent.parent / ".cache" / "diffusion-link"))

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "tests"), str(REPO / "tests" / "data")]

CONNECTS: list = []
BLOCK_ALL = {"on": False}


def _audit(event, args):
    if event == "socket.connect":
        address = args[1]
        host = address[0] if isinstance(address, tuple) else str(address)
        local = isinstance(address, (str, bytes)) or host in ("127.0.0.1", "::1", "localhost")
        CONNECTS.append(address)
        if BLOCK_ALL["on"] or not local:
            raise ConnectionRefusedError(f"network access attempted in a test: {address!r}")


sys.addaudithook(_audit)


@pytest.fixture
def no_network():
    """Inside this fixture *any* socket connection (even local) raises, and is recorded."""
    CONNECTS.clear()
    BLOCK_ALL["on"] = True
    try:
        yield CONNECTS
    finally:
        BLOCK_ALL["on"] = False


def write_stand_in_recordings(folder: Path) -> Path:
    """Stand-ins for the demo's tuxpaint recordings (no network in tests): for each file the demo uses, a
    1.2 s stretch of the same animal's ovos recording (a different stretch per file) as Ogg Vorbis, with a
    .txt description, under the package's layout. Returns ``folder``."""
    import numpy as np
    import soundfile as sf

    from diffusion_link.assets import animal_sounds
    from diffusion_link.data.audio import load_audio
    from diffusion_link.data.recordings import SPLIT_PLAN, tuxpaint_files

    ovos = animal_sounds()
    for i, rel in enumerate(tuxpaint_files()):
        animal = next(a for a, plan in SPLIT_PLAN.items() if any(rec == f"tuxpaint:{rel}" for pieces in plan.values() for rec, _ in pieces))
        wave = load_audio(ovos[animal], 22_050)
        start = (i * 7919) % max(len(wave) - 26_460, 1)
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        sf.write(folder / rel, np.ascontiguousarray(wave[start : start + 26_460]), 22_050, format="OGG", subtype="VORBIS")
        (folder / rel).with_suffix(".txt").write_text(f"A {animal} (stand-in).\n")
    return folder


@pytest.fixture(scope="session")
def stand_in_recordings(tmp_path_factory) -> Path:
    """The unseen-recordings demo's held-out recordings, as stand-ins fetched by the real fetch step from a
    local folder; every unseen demo built afterwards in the tests (and in child processes) reads them."""
    from diffusion_link.data.fetch_recordings import fetch

    out = fetch(tmp_path_factory.mktemp("recordings") / "fetched", extra=write_stand_in_recordings(tmp_path_factory.mktemp("stamps")))
    os.environ["DIFFUSION_LINK_RECORDINGS"] = str(out)
    return out


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory) -> Path:
    """The demo dataset at its smallest useful size (6 / 3 / 3 clips), built once."""
    from diffusion_link.data.demo import build_demo

    return build_demo(tmp_path_factory.mktemp("demo") / "demo", n_train=6, n_val=3, n_test=3)


@pytest.fixture(scope="session")
def demo_store(tmp_path_factory, tiny_demo) -> Path:
    """The cache stage's store of the tiny demo (random-init CLAP), built once through the CLI."""
    from helpers import cache_config

    from diffusion_link.cli import main

    tmp = tmp_path_factory.mktemp("demo-store")
    main(["predict", "--config", str(cache_config(tmp, tiny_demo))])
    return (tmp / "stores" / "demo").resolve()


@pytest.fixture(scope="session")
def bridge_export(tmp_path_factory, demo_store) -> Path:
    """Diffusion-Link trained for 3 steps on the tiny demo store (its export folder)."""
    from helpers import bridge_updates, repo_config

    from diffusion_link.cli import main

    tmp = tmp_path_factory.mktemp("cap-bridge")
    main(["fit", "--config", str(repo_config("configs/bridge/demo.yaml", tmp, bridge_updates(tmp, demo_store, "dl", steps=3)))])
    return tmp / "dl" / "export"


@pytest.fixture(scope="session")
def zero_shot(tmp_path_factory, demo_store):
    """The zero-shot captioner (tiny GPT-2) fitted on the tiny demo store: (its folder, its config)."""
    from helpers import caption_updates, repo_config

    from diffusion_link.cli import main

    tmp = tmp_path_factory.mktemp("zero-shot")
    config = repo_config("configs/caption/zero-shot.yaml", tmp, caption_updates(tmp, demo_store, "zs"))
    main(["fit", "--config", str(config)])
    return tmp, config


@pytest.fixture(scope="session")
def encoder():
    from diffusion_link.encoder.clap import ClapConfig, ClapEncoder

    return ClapEncoder(ClapConfig())


# -- the work tree stays clean: tests write only under their tmp paths and ignored folders ---------


def _porcelain() -> set[str] | None:
    import subprocess

    try:
        out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=REPO, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    return {line for line in out.stdout.splitlines() if ".venv" not in line} if out.returncode == 0 else None


def pytest_sessionstart(session):
    session.config._porcelain_before = _porcelain()


def pytest_sessionfinish(session, exitstatus):
    before = getattr(session.config, "_porcelain_before", None)
    after = _porcelain()
    if before is None or after is None:
        return
    if new := sorted(after - before):
        print("\nThe test run changed the work tree (tests must write under tmp paths or ignored folders):\n  " + "\n  ".join(new))
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
