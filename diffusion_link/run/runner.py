"""``diffusion-link run RECIPE``: the steps of a recipe, each a ``diffusion-link`` command in its own process.

* **Reuse.** A step is reused only when its record (``<run_dir>/.steps/<step>.json``) says it finished with
  the same key: a hash of its command line, the content of its config files, the keys of the steps it
  reads and, for the feature store, the store's own checksum (which covers the encoder and the data).
  File existence alone never counts. The cache step always runs: it reuses a complete store itself.
* **Resume.** Every fit writes ``<step run_dir>/checkpoints/last.ckpt`` as it goes; a fit that was stopped
  (a signal, a crash, a killed job) starts again from it when its key is unchanged. Under SLURM, Lightning's
  own requeue checkpoint (``hpc_ckpt_*.ckpt``) is left to Lightning.
* **Signals.** SIGTERM, SIGINT and SIGUSR2 are passed to the running step; the run then ends with status
  128 + the signal's number and a line naming the step and how to go on. SIGUSR1 (SLURM's usual
  pre-emption warning) is passed on and the step goes on: Lightning's SLURM connector saves and requeues.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import uuid
import time
from dataclasses import dataclass
from pathlib import Path

from diffusion_link import __version__
from diffusion_link.run.recipe import Recipe
from diffusion_link.run.steps import Step

FORWARD_AND_STOP = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2)
FORWARD_AND_GO_ON = (signal.SIGUSR1,)
GRACE_SECONDS = 120  # after the signal, how long a step may take to stop by itself before it is killed


class StepFailed(RuntimeError):
    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


@dataclass
class Plan:
    step: Step
    key: str | None  # None: not known before the steps it reads have run
    action: str  # "reuse", "run", "resume" (a stopped fit, from its last checkpoint)
    why: str


def _records(recipe: Recipe) -> Path:
    return recipe.run_dir / ".steps"


def record_path(recipe: Recipe, step: Step) -> Path:
    return _records(recipe) / f"{step.slug}.json"


def read_record(recipe: Recipe, step: Step) -> dict:
    path = record_path(recipe, step)
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except json.JSONDecodeError:
        return {}


def store_identity(step: Step) -> str | None:
    """The feature store's checksum (what the cache step made), or None when there is no complete store."""
    meta = step.outputs[0]
    try:
        data = json.loads(meta.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data.get("checksum") if data.get("status") == "complete" else None


def made_by(record: dict) -> str:
    """What a step's dependents hash for it: its key and the run that made its outputs. A step run again
    with the same settings (a lost output, a resumed fit) remakes its outputs, which may differ (a
    resumed fit does not replay the data order), so every step that reads them runs again too."""
    return f"{record.get('key')}:{record.get('made', '')}"


def step_key(step: Step, dep_keys: list[str]) -> str:
    digest = hashlib.sha256(json.dumps({"version": __version__, "command": step.command, "deps": dep_keys}).encode())
    for config in step.configs:
        digest.update(Path(config).read_bytes())
    return digest.hexdigest()[:20]


def resume_checkpoint(step: Step) -> Path | None:
    last = step.run_dir / "checkpoints" / "last.ckpt"
    return last if step.fits and last.is_file() else None


def plan(recipe: Recipe, steps: list[Step]) -> list[Plan]:
    """What a run would do now, without running anything."""
    keys: dict[str, str | None] = {}
    runs: set[str] = set()
    out = []
    for step in steps:
        if step.kind == "cache":
            identity = store_identity(step)
            keys[step.name] = identity
            why = f"checks its store (complete store {identity} reused when the encoder and data are unchanged)" if identity else "no complete store yet"
            out.append(Plan(step, identity, "run", why))
            continue
        dep_keys = [keys.get(d) for d in step.deps]
        if any(k is None for k in dep_keys):
            keys[step.name] = None
            out.append(Plan(step, None, "run", "reads an output that does not exist yet"))
            runs.add(step.name)
            continue
        key = keys[step.name] = step_key(step, dep_keys)  # type: ignore[arg-type]
        record = read_record(recipe, step)
        upstream = [d for d in step.deps if d in runs]
        if record.get("status") == "done" and record.get("key") == key and all(p.exists() for p in step.outputs) and not upstream:
            keys[step.name] = made_by(record)
            out.append(Plan(step, key, "reuse", "unchanged"))
            continue
        runs.add(step.name)
        if upstream:
            why = f"reads {upstream[0]}, which runs" + (f" (and {len(upstream) - 1} more)" if len(upstream) > 1 else "")
        elif not record:
            why = "never ran"
        elif record.get("key") != key:
            why = "its settings or inputs changed"
        elif record.get("status") != "done":
            why = "did not finish"
        else:
            why = "its outputs are missing"
        resumable = record.get("key") == key and record.get("status") != "done" and resume_checkpoint(step) is not None
        out.append(Plan(step, key, "resume" if resumable else "run", why + (", resumes from checkpoints/last.ckpt" if resumable else "")))
    return out


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """A step dies with its runner (Linux): a killed run leaves no orphan training in the background."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class Runner:
    #: how a step's command starts (tests replace it with a stand-in stage)
    program = (sys.executable, "-m", "diffusion_link")

    def __init__(self, recipe: Recipe, steps: list[Step], console=None, rerun_hint: str = ""):
        self.recipe, self.steps = recipe, steps
        self.console = console or sys.stderr
        self.received: list[int] = []
        self.child: subprocess.Popen | None = None
        self._killer: threading.Timer | None = None
        self.rerun_hint = rerun_hint
        self.width = max((len(s.name) for s in steps), default=10) + 9

    def _on_signal(self, signum, frame) -> None:
        child = self.child
        if signum not in FORWARD_AND_GO_ON:
            self.received.append(signum)
            if child is not None and self._killer is None:  # a step that does not stop by itself is killed
                self._killer = threading.Timer(GRACE_SECONDS, child.kill)
                self._killer.daemon = True
                self._killer.start()
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    def log_path(self, index: int, step: Step) -> Path:
        return self.recipe.run_dir / "logs" / f"{index:02d}-{step.slug}.log"

    def run(self) -> None:
        handled = FORWARD_AND_STOP + FORWARD_AND_GO_ON
        previous = {s: signal.signal(s, self._on_signal) for s in handled}
        try:
            keys: dict[str, str] = {}
            for index, step in enumerate(self.steps, 1):
                self._run_one(index, step, keys)
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    def _run_one(self, index: int, step: Step, keys: dict[str, str]) -> None:
        label = f"[{index:2d}/{len(self.steps)}] {step.name}"
        record = read_record(self.recipe, step)
        if step.kind != "cache":
            key = step_key(step, [keys[d] for d in step.deps])
            if record.get("status") == "done" and record.get("key") == key and all(p.exists() for p in step.outputs):
                keys[step.name] = made_by(record)
                self.console.write(f"{label:{self.width}}  up to date, reused\n")
                self.console.flush()
                return
        else:
            key = "cache"
        command = list(step.command)
        checkpoint = resume_checkpoint(step)
        resumed = checkpoint is not None and record.get("key") == key and record.get("status") != "done" and not _slurm_requeue_checkpoint(step)
        if resumed:
            command.append(f"--ckpt_path={checkpoint}")
            label += " (resumed)"
        elif checkpoint is not None:
            checkpoint.unlink()  # another configuration's, or a finished run's: never resume from it
        log = self.log_path(index, step)
        self._write_record(step, {"key": key, "status": "running", "log": str(log), "command": command})
        start = time.time()
        code = self._spawn(command, log, label)
        seconds = time.time() - start
        if self.received:
            name = signal.Signals(self.received[0]).name
            raise StepFailed(
                f"stopped by {name} during step {index}/{len(self.steps)} ({step.name}) after {seconds:.0f} s; finished steps are kept. "
                f"Run the same command again to go on{' (this fit resumes from its last checkpoint)' if step.fits else ''}{self.rerun_hint}. Log: {log}",
                128 + self.received[0],
            )
        if code != 0:
            how = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
            self.console.write(f"{label:{self.width}}  FAILED after {seconds:.0f} s ({how})\n")
            raise StepFailed(f"step {index}/{len(self.steps)} ({step.name}) failed ({how}); the end of its log, {log}:\n{_tail(log)}", 1)
        if step.kind == "cache":
            key = keys[step.name] = store_identity(step) or ""
            if not key:
                raise StepFailed(f"the cache step finished but {step.outputs[0]} is not a complete store; see {log}", 1)
        record = {
            "key": key,
            "made": uuid.uuid4().hex[:12],
            "status": "done",
            "seconds": round(seconds, 1),
            "resumed": resumed,
            "log": str(log),
            "command": command,
        }
        self._write_record(step, record)
        keys[step.name] = made_by(record) if step.kind != "cache" else key
        self.console.write(f"{label:{self.width}}  {seconds / 60:5.1f} min\n")
        self.console.flush()

    def _write_record(self, step: Step, record: dict) -> None:
        from diffusion_link.files import write_json

        path = record_path(self.recipe, step)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, record)

    def _spawn(self, command: list[str], log: Path, label: str) -> int:
        """The step in its own process; everything it prints goes to ``log``, its progress line to the console."""
        log.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "DIFFUSION_LINK_PROGRESS_LABEL": label}
        fds: tuple[int, ...] = ()
        try:
            fds = (os.dup(self.console.fileno()),)
            env["DIFFUSION_LINK_PROGRESS_FD"] = str(fds[0])
        except (AttributeError, OSError, ValueError):  # a console without a file descriptor: no progress line
            env.pop("DIFFUSION_LINK_PROGRESS_FD", None)
        try:
            with open(log, "w", encoding="utf-8") as out:
                out.write(f"$ diffusion-link {' '.join(command)}\n")
                out.flush()
                self.child = subprocess.Popen(
                    [*self.program, *command],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=env,
                    pass_fds=fds,
                    start_new_session=True,  # a signal reaches it once, through the runner
                    preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
                )
        finally:
            for fd in fds:
                os.close(fd)
        try:
            return self.child.wait()
        finally:
            if self._killer is not None:
                self._killer.cancel()
                self._killer = None
            self.child = None


def _slurm_requeue_checkpoint(step: Step) -> bool:
    return bool(os.environ.get("SLURM_JOB_ID")) and any(step.run_dir.glob("hpc_ckpt_*.ckpt"))


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
