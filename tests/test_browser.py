"""The dashboard in a real browser: Playwright driving Debian's Chromium against `modelforge run`.

Open the app, see the tabs, fill the form with the demo model, validate, start, watch progress
reach the end, reload and still see the run, find it in the history, open Troubleshooting and
see the environment report. Screenshots go to test-artifacts/browser/ (look at them).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from trainers.tools.demo import SAMPLE_DIR, SAMPLE_SFT
from ui_server import ROOT, free_port, modelforge_run_args, running_server

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(),
                                reason="needs Debian's chromium: apt-get install -y chromium")
playwright_api = pytest.importorskip("playwright.sync_api")

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
SHOTS = ROOT / "test-artifacts" / "browser"


@pytest.fixture(scope="module")
def server(demo_model, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("browser-data")
    port = free_port()
    args = modelforge_run_args(port, data_dir, demo_model, SAMPLE_DIR)
    with running_server(args, data_dir / "server.log", port=port) as url:
        yield url


@pytest.fixture(scope="module")
def page(server):
    SHOTS.mkdir(parents=True, exist_ok=True)
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(30_000)
        yield page
        browser.close()


def shot(page, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def field(page, name: str):
    """The text or number input of the generated form's field `name`."""
    return page.locator(f"#cfg-{name}").locator("input, textarea").first


def type_into(page, name: str, text: str) -> None:
    """Fill a field and leave it, as a person does (Tab), and check the page kept the value.

    Gradio mounts an accordion's fields as it opens; text typed in the first instant can land
    in an input that is then replaced (seen on a loaded 2-core machine: max_steps back at -1).
    A person cannot type that fast, so the test types again, at most three times."""
    box = field(page, name)
    for _ in range(3):
        playwright_api.expect(box).to_be_visible()
        box.fill(text)
        box.press("Tab")
        page.wait_for_timeout(300)
        if box.input_value() == text:
            return
    playwright_api.expect(box).to_have_value(text)


def fill_demo_run(page, demo_model, max_steps: int, **fields: str) -> None:
    """The Training form for a short run of the demo model on the sample data; fields: more
    form fields to type (eval_split, ...)."""
    type_into(page, "model_name", str(demo_model))
    type_into(page, "dataset", str(SAMPLE_SFT))
    type_into(page, "max_seq_length", "64")
    for name, value in fields.items():
        type_into(page, name, value)
    page.locator("#group-optimisation").get_by_text("Optimisation").click()
    type_into(page, "max_steps", str(max_steps))
    type_into(page, "learning_rate", "0.002")


def test_train_from_the_browser_and_find_the_run_everywhere(page, server, demo_model):
    expect = playwright_api.expect
    page.goto(server + "/")
    for tab in ("Training", "Runs", "Benchmark", "Troubleshooting"):
        expect(page.get_by_role("tab", name=tab)).to_be_visible()
    shot(page, "01-opened")

    fill_demo_run(page, demo_model, max_steps=6)
    page.locator("#validate").click()
    expect(page.locator("#problems")).to_contain_text("The config is valid.")
    expect(page.locator("#commands")).to_contain_text("modelforge train config.json")
    shot(page, "02-validated")

    page.locator("#start").click()
    expect(page.locator("#problems")).to_contain_text("Started run")
    run_id = re.search(r"Started run (\S+)\.", page.locator("#problems").inner_text()).group(1)
    expect(page.locator("#run-status")).to_contain_text("step", timeout=180_000)
    shot(page, "03-running")
    expect(page.locator("#run-status")).to_contain_text("succeeded", timeout=240_000)
    expect(page.locator("#run-status")).to_contain_text("step 6 / 6")
    page.wait_for_timeout(1500)  # the plots redraw on the next tick
    shot(page, "04-finished")

    page.reload()  # a fresh page shows the newest run where it is
    expect(page.locator("#run-status")).to_contain_text(run_id)
    expect(page.locator("#run-status")).to_contain_text("succeeded")

    page.get_by_role("tab", name="Runs").click()
    table = page.locator("#history-table")
    expect(table).to_contain_text(run_id)
    expect(table).to_contain_text("succeeded")
    table.get_by_test_id("cell-0-1").click()  # the newest run's row
    expect(page.locator("#history-summary")).to_contain_text("train loss")
    shot(page, "05-history")

    page.get_by_role("tab", name="Troubleshooting").click()
    report = page.locator("#env-report")
    expect(report).to_contain_text("python", timeout=120_000)
    expect(report).to_contain_text("transformers")
    page.locator("#checker-text").locator(".cm-content").fill("lora_r: 0\n")
    page.locator("#checker-run").click()
    expect(page.locator("#checker-result")).to_contain_text("is required")
    shot(page, "06-troubleshooting")
