"""How fast the server starts, and proof that it does so without torch.

1. `modelforge run` on a free loopback port and a fresh data directory, --repeats times: the
   wall time from starting the process to the first 200 on GET /api/health, then to the first
   200 on GET / (the dashboard's page) and GET /config (what the page loads to draw itself).
2. /api/health's own `torch_in_server` answer, taken after the dashboard page was served.
3. In a fresh interpreter: create_app(settings) with the dashboard mounted, then the list of
   heavy modules (torch, transformers, peft, trl, unsloth, datasets, bitsandbytes) that were
   imported, and the time that took.
4. With Debian's Chromium (if /usr/bin/chromium exists): from page.goto to the Start button
   being visible and enabled, i.e. the page is usable.

    python benchmarks/startup_time.py [--repeats 5] [--out benchmarks/results/startup_cpu.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "peft", "trl", "unsloth", "datasets", "bitsandbytes")
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]

IMPORT_PROBE = """
import json, sys, tempfile, time
from pathlib import Path
t0 = time.perf_counter()
from modelforge_ui.server import create_app
from modelforge_ui.settings import Settings
t1 = time.perf_counter()
app = create_app(Settings.from_env(data_dir=Path(tempfile.mkdtemp())))
t2 = time.perf_counter()
mounted = any(getattr(r, "path", None) in ("", "/") for r in app.routes)
heavy = {m: m in sys.modules for m in %r}
print(json.dumps({"import_s": round(t1 - t0, 3), "create_app_s": round(t2 - t1, 3),
                  "dashboard_mounted": mounted, "heavy_modules_imported": heavy}))
app.state.manager.shutdown()
""" % (HEAVY,)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def first_200(url: str, started: float, proc: subprocess.Popen, timeout: float = 120) -> float:
    while time.perf_counter() - started < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with code {proc.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return time.perf_counter() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.01)
    raise TimeoutError(f"no 200 from {url} within {timeout} s")


def modelforge_command(port: int, data_dir: str) -> list[str]:
    script = Path(sys.executable).parent / "modelforge"
    head = [str(script)] if script.exists() else [sys.executable, "-m", "modelforge_ui.cli"]
    return head + ["run", "--port", str(port), "--data-dir", data_dir]


def one_start(browser=None) -> dict:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as data_dir:
        command = modelforge_command(port, data_dir)
        started = time.perf_counter()
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        try:
            result = {"health_200_s": round(first_200(f"{base}/api/health", started, proc), 3)}
            result["page_200_s"] = round(first_200(f"{base}/", started, proc), 3)
            result["page_config_200_s"] = round(first_200(f"{base}/config", started, proc), 3)
            result["torch_in_server"] = httpx.get(f"{base}/api/health").json()["torch_in_server"]
            if browser is not None:
                result["page_usable_after_health_s"] = page_usable_s(browser, base)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
    result["command"] = " ".join(Path(command[0]).name if i == 0 else c
                                 for i, c in enumerate(command))
    return result


def page_usable_s(browser, base: str) -> float:
    page = browser.new_page()
    try:
        start = time.perf_counter()
        page.goto(base + "/")
        page.locator("#start").wait_for(state="visible", timeout=30_000)
        page.wait_for_function("document.querySelector('#start') && "
                               "!document.querySelector('#start').disabled", timeout=30_000)
        return round(time.perf_counter() - start, 3)
    finally:
        page.close()


def import_probe() -> dict:
    out = subprocess.run([sys.executable, "-c", IMPORT_PROBE], capture_output=True, text=True,
                         cwd=ROOT, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def summary(values: list[float]) -> dict:
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3),
            "max": round(max(values), 3), "all": values}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/startup_cpu.json")
    args = parser.parse_args(argv)

    browser_ctx = None
    if CHROMIUM.exists():
        from playwright.sync_api import sync_playwright

        browser_ctx = sync_playwright().start()
        browser = browser_ctx.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
    else:
        browser = None
    try:
        starts = [one_start(browser) for _ in range(args.repeats)]
    finally:
        if browser_ctx is not None:
            browser.close()
            browser_ctx.stop()
    probe = import_probe()
    report = {
        "what": "modelforge run: process start -> first 200 on /api/health, / and /config; "
                "heavy imports in the server process",
        "invocation": "python benchmarks/startup_time.py " + " ".join(argv or sys.argv[1:]),
        "command_measured": starts[0]["command"],
        "health_200_s": summary([s["health_200_s"] for s in starts]),
        "page_200_s": summary([s["page_200_s"] for s in starts]),
        "page_config_200_s": summary([s["page_config_200_s"] for s in starts]),
        "torch_in_server_per_start": [s["torch_in_server"] for s in starts],
        "import_probe": probe,
        "environment": {"python": platform.python_version(), "platform": platform.platform(),
                        "cpu_count": os.cpu_count(), "gradio": version("gradio"),
                        "fastapi": version("fastapi"), "uvicorn": version("uvicorn"),
                        "note": "shared machine: other jobs may have been using the CPUs"},
    }
    if browser is not None:
        report["page_usable_after_health_s"] = summary(
            [s["page_usable_after_health_s"] for s in starts])
        report["page_usable_meaning"] = ("page.goto('/') until the Start button is visible and "
                                         "enabled, in Debian's Chromium, server already healthy")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    ok = not any(probe["heavy_modules_imported"].values()) and \
        not any(report["torch_in_server_per_start"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
