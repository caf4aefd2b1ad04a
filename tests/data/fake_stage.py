"""A stand-in for one ``diffusion-link`` stage, for the runner's tests: it behaves as Lightning does where
the runner relies on it, in a fraction of a second.

* ``fit``: ``trainer.max_steps`` steps (default 4), ``<run_dir>/checkpoints/last.ckpt`` after each
  (``{"step": n}``), ``--ckpt_path`` resumes from it, SIGTERM/SIGINT end it early with status 143/130
  (the CLI's exit for Lightning's SIGTERMException), then ``export/config.json``.
* ``predict`` (the cache): ``<run_dir>/<name>/store.json`` complete, checksum ``$FAKE_STORE_CHECKSUM``.
* ``test``: ``<report_dir or run_dir/report>/gap_report.csv`` and ``run_dir/test/<row>/scores.json`` per row; ``$FAKE_FAIL`` names a step that fails.
* ``$FAKE_SLOW`` names a step whose fit waits 0.2 s per step (time to send it a signal).

Each call is appended to ``<run's root>/calls.jsonl`` (the step's name comes from the runner's progress label).
"""

import json
import os
import signal
import sys
import time
from pathlib import Path

args = sys.argv[1:]
command = args[0]
options = dict(a[2:].split("=", 1) for a in args if a.startswith("--") and "=" in a)
run_dir = Path(options["run_dir"])
label = os.environ.get("DIFFUSION_LINK_PROGRESS_LABEL", "")
step = label.split("] ", 1)[-1].removesuffix(" (resumed)")
root = Path("run")
stopped = []
signal.signal(signal.SIGTERM, lambda s, f: stopped.append(143))
signal.signal(signal.SIGINT, lambda s, f: stopped.append(130))
call = {"step": step, "command": command, "ckpt_path": options.get("ckpt_path")}
print(f"fake stage: {' '.join(args)}", flush=True)
if os.environ.get("FAKE_FAIL") == step:
    print("Traceback (most recent call last):\n  the fake stage broke", flush=True)
    sys.exit(3)

if command == "fit":
    checkpoints = run_dir / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    (run_dir / "pid").write_text(str(os.getpid()))
    start = json.loads(Path(options["ckpt_path"]).read_text())["step"] if options.get("ckpt_path") else 0
    call["started_at"] = start
    for n in range(start, int(options.get("trainer.max_steps", 4))):
        if stopped:
            root.mkdir(exist_ok=True)
            with open(root / "calls.jsonl", "a") as f:
                f.write(json.dumps({**call, "stopped_at": n}) + "\n")
            sys.exit(stopped[0])
        time.sleep(0.2 if os.environ.get("FAKE_SLOW") == step else 0.0)
        (checkpoints / "last.ckpt").write_text(json.dumps({"step": n + 1}))
    (run_dir / "export").mkdir(parents=True, exist_ok=True)
    (run_dir / "export" / "config.json").write_text(json.dumps({"steps": options.get("trainer.max_steps")}))
elif command == "predict":
    store = run_dir / "toy"
    store.mkdir(parents=True, exist_ok=True)
    (store / "store.json").write_text(json.dumps({"status": "complete", "checksum": os.environ.get("FAKE_STORE_CHECKSUM", "abc")}))
elif command == "test":
    out = Path(options.get("model.init_args.report_dir") or run_dir / "report")
    out.mkdir(parents=True, exist_ok=True)
    (out / "gap_report.csv").write_text("method\n")
    for key in json.loads(options.get("model.init_args.rows", '{"": null}')):  # a caption test: one folder per row
        (run_dir / "test" / key).mkdir(parents=True, exist_ok=True)
        (run_dir / "test" / key / "scores.json").write_text("{}")
root.mkdir(exist_ok=True)
with open(root / "calls.jsonl", "a") as f:
    f.write(json.dumps(call) + "\n")
