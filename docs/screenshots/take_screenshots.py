"""Retake the README's screenshots: `modelforge run --demo` on a temporary data directory and a
free port, Debian's Chromium driven by Playwright, a short training run on the demo model in the
Training tab and a short Hugging Face-vs-Unsloth benchmark in the Benchmark tab (on a CPU: a few
minutes; the verdict then says it is a CPU measurement).

    python docs/screenshots/take_screenshots.py

Needs `pip install playwright` and `apt-get install -y chromium` (Playwright's own browser
download is not used).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
VIEWPORT = {"width": 1400, "height": 900}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(data_dir: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    log = (data_dir / "server.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "modelforge_ui.cli", "run", "--demo", "--port", str(port),
         "--data-dir", str(data_dir)], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "HF_HUB_OFFLINE": "1"}, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 600  # --demo may pre-train the demo model first
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"the server exited; see {data_dir / 'server.log'}")
        try:
            urllib.request.urlopen(url + "/api/health", timeout=5)
            return proc, url
        except OSError:
            time.sleep(2)
    proc.terminate()
    sys.exit("the server did not answer /api/health in 10 minutes")


def set_field(page, name: str, text: str) -> None:
    """Fill a generated form field and leave it; an accordion mounts its inputs as it opens,
    so a value typed too early can be lost: type again (see tests/test_browser.py)."""
    box = page.locator(f"#cfg-{name}").locator("input, textarea").first
    for _ in range(3):
        expect(box).to_be_visible()
        box.fill(text)
        box.press("Tab")
        page.wait_for_timeout(300)
        if box.input_value() == text:
            return
    expect(box).to_have_value(text)


def dashboard(page, url: str) -> None:
    """The Training tab with a finished short run on the demo model: progress, loss, speed."""
    page.goto(url + "/")
    page.locator("#group-optimisation").get_by_text("Optimisation").click()
    set_field(page, "max_steps", "30")
    page.locator("#start").click()
    expect(page.locator("#problems")).to_contain_text("Started run")
    expect(page.locator("#run-status")).to_contain_text("succeeded", timeout=600_000)
    page.wait_for_timeout(3000)  # the plots redraw on the next tick
    page.locator("#run-status").scroll_into_view_if_needed()
    page.screenshot(path=str(HERE / "dashboard.png"))


def benchmark(page, url: str) -> None:
    """A matched benchmark of both providers on the demo model, and its verdict."""
    page.goto(url + "/")
    page.get_by_role("tab", name="Benchmark").click()
    set_field(page, "steps", "5")
    page.locator("#bench-run").click()
    expect(page.locator("#bench-message")).to_contain_text("Queued benchmark")
    expect(page.locator("#bench-status")).to_contain_text("succeeded", timeout=900_000)
    page.wait_for_timeout(3000)
    page.locator("#bench-verdict").scroll_into_view_if_needed()
    page.screenshot(path=str(HERE / "benchmark_verdict.png"))


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="modelforge-shots-") as tmp:
        proc, url = start_server(Path(tmp))
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
                page = browser.new_context(viewport=VIEWPORT).new_page()
                page.set_default_timeout(30_000)
                dashboard(page, url)
                benchmark(page, url)
                browser.close()
        finally:
            os.killpg(proc.pid, 15)
            proc.wait(timeout=60)
    for png in ("dashboard.png", "benchmark_verdict.png"):
        print(f"{HERE / png}: {(HERE / png).stat().st_size // 1024} KB")


if __name__ == "__main__":
    main()
