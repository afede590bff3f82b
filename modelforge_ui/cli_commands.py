"""`modelforge run` (the server: dashboard + REST API) and `modelforge doctor`.

Flags override the MODELFORGE_* environment variables (see modelforge_ui/settings.py).
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
from pathlib import Path

from trainers.errors import ModelForgeError


def add_server_commands(sub) -> None:
    run = sub.add_parser("run", help="serve the dashboard and the REST API",
                         description="Serve the dashboard at / and the REST API at /api "
                                     "(docs at /docs). Listens on 127.0.0.1 unless told "
                                     "otherwise; any other address needs a token.")
    run.add_argument("--host", help="address to listen on (default 127.0.0.1; MODELFORGE_HOST)")
    run.add_argument("--port", type=int, help="port (default 8000; MODELFORGE_PORT)")
    run.add_argument("--token", help="bearer token every API call and the dashboard login "
                                     "need (MODELFORGE_TOKEN is safer: flags show in `ps`)")
    run.add_argument("--data-dir", type=Path, help="runs, uploads and the run database "
                                                   "(default MODELFORGE_HOME or "
                                                   "~/.local/share/modelforge)")
    run.add_argument("--allowed-root", action="append", type=Path, metavar="DIR",
                     help="a directory data sets and local models may be read from, "
                          "repeatable (MODELFORGE_ALLOWED_ROOTS)")
    run.add_argument("--allowed-host", action="append", metavar="NAME",
                     help="another name this server is reached by (a reverse proxy's), "
                          "repeatable (MODELFORGE_ALLOWED_HOSTS); requests addressed to any "
                          "other name are refused")
    run.add_argument("--max-upload-mb", type=float, help="upload size limit (default 512)")
    run.add_argument("--allow-trust-remote-code", action="store_true", default=None,
                     help="let configs set trust_remote_code (runs code from model repos)")
    run.add_argument("--worker-memory-gb", type=float,
                     help="cap each training worker's data memory (Linux); a run that needs "
                          "more fails with an out-of-memory diagnosis")
    run.add_argument("--forwarded-allow-ips", metavar="ADDRS",
                     help="comma-separated addresses or networks of the reverse proxies whose "
                          "X-Forwarded-For/-Proto are trusted (default none; "
                          "MODELFORGE_FORWARDED_ALLOW_IPS)")
    run.add_argument("--concurrent-per-kind", type=int,
                     help="previews, config checks, doctor refreshes and zips that run at once, "
                          "each kind (default 2; more get 429; MODELFORGE_CONCURRENT_PER_KIND)")
    run.add_argument("--demo", action="store_true", default=None,
                     help="build the offline demo model under the data directory if missing "
                          "and allow the bundled sample data sets")
    run.add_argument("--no-dashboard", dest="dashboard", action="store_false", default=None,
                     help="serve the REST API only")
    run.set_defaults(func=cmd_run)

    doctor = sub.add_parser("doctor", help="check this machine: OS, GPU, CUDA, libraries")
    doctor.add_argument("--json", action="store_true", help="print the checks as JSON")
    doctor.set_defaults(func=cmd_doctor)


def cmd_run(args) -> int:
    from modelforge_ui.settings import Settings

    try:
        settings = Settings.from_env(
            host=args.host, port=args.port, token=args.token, data_dir=args.data_dir,
            allowed_roots=tuple(args.allowed_root) if args.allowed_root else None,
            allowed_hosts=tuple(args.allowed_host) if args.allowed_host else None,
            max_upload_mb=args.max_upload_mb, allow_trust_remote_code=args.allow_trust_remote_code,
            worker_memory_gb=args.worker_memory_gb, demo=args.demo, dashboard=args.dashboard,
            forwarded_allow_ips=tuple(args.forwarded_allow_ips.split(","))
            if args.forwarded_allow_ips else None,
            concurrent_per_kind=args.concurrent_per_kind)
        if settings.demo:
            ensure_demo_model(settings.demo_model_dir)
    except ModelForgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from modelforge_ui.server import serve

    return serve(settings)


def ensure_demo_model(path: Path) -> None:
    """Copy the shipped demo model to path; if it must be pre-trained, do that in a subprocess,
    so the server process never imports torch."""
    if (path / "config.json").is_file():
        return
    from trainers.tools.demo import needs_pretraining, pretraining_notice, write_demo_model

    if not needs_pretraining():
        write_demo_model(path)
        return
    print(pretraining_notice(), flush=True)
    build = subprocess.Popen([sys.executable, "-m", "modelforge_ui.cli", "demo-model",
                              str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True, env={**os.environ})
    tail = collections.deque(maxlen=40)
    for line in build.stderr:  # its progress (step, time left) as it comes
        print(line, end="", file=sys.stderr, flush=True)
        tail.append(line)
    if build.wait() != 0:
        raise ModelForgeError(f"Could not build the demo model: {''.join(tail).strip()[-1000:]}",
                              "Check that torch and transformers import (modelforge doctor).")


def cmd_doctor(args) -> int:
    from trainers.tools.doctor import format_report, run_checks
    from trainers.runs.process import default_data_dir

    checks = run_checks(default_data_dir())
    print(json.dumps(checks, indent=2) if args.json else format_report(checks))
    return 1 if any(c["status"] == "error" for c in checks) else 0

