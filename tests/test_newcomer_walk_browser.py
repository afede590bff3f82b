"""Issue 30 in Chromium at 1400x900: the Training tab's status and Stop on a server whose data
directory holds a run that failed long ago, started from the CLI.

A fresh page says no run is active (naming that old run as the newest, not as its own), and its
Stop is disabled: it once answered "Stop requested for <the failed run>". Validate reports the
field problem and the misspelled data path together; a refused Start keeps the status. A run
started from the page is followed and labelled as the page's, Stop acts on it. Screenshots go to
test-artifacts/newcomer/ (look at them).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from test_browser import type_into as fill
from test_new_user_browser import ARGS, CHROMIUM, expect, playwright_api, pytestmark  # noqa: F401
from trainers.config import build_config
from trainers.runs.manager import visible_gpus
from trainers.runs.registry import RunRegistry
from trainers.tools.demo import SAMPLE_DIR, SAMPLE_SFT
from ui_server import ROOT, free_port, modelforge_run_args, running_server

SHOTS = ROOT / "test-artifacts" / "newcomer"


@pytest.fixture(scope="module")
def old_cli_run(tmp_path_factory, demo_model) -> tuple[Path, str]:
    """A data directory holding one run, started from the CLI, that failed long ago."""
    data_dir = tmp_path_factory.mktemp("newcomer-data")
    registry = RunRegistry(data_dir)
    run = registry.create(build_config({"model_name": str(demo_model),
                                        "dataset": str(SAMPLE_SFT)}), source="cli")
    registry.set_status(run["id"], "failed", {"error_type": "internal",
                                              "message": "it failed long ago"})
    return data_dir, run["id"]


@pytest.fixture(scope="module")
def page(old_cli_run, demo_model):
    data_dir, _ = old_cli_run
    SHOTS.mkdir(parents=True, exist_ok=True)
    port = free_port()
    args = modelforge_run_args(port, data_dir, demo_model, SAMPLE_DIR)
    with running_server(args, data_dir / "server.log", port=port) as url:
        with playwright_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(30_000)
            page.goto(url + "/")
            yield page
            browser.close()


def test_a_fresh_page_follows_no_old_run_and_stop_is_off(page, old_cli_run):
    _, old_id = old_cli_run
    status = page.locator("#run-status")
    expect(status).to_contain_text("No active run, and none started from this page")
    expect(status).to_contain_text(old_id)
    expect(status).to_contain_text("started from the CLI")
    expect(page.locator("#stop")).to_be_disabled()
    for name in ("model_name (required)", "dataset (required)"):  # named by their labels
        expect(page.get_by_role("textbox", name=name, exact=True)).to_be_visible()
    page.screenshot(path=str(SHOTS / "01-fresh.png"))


def test_validate_reports_the_field_and_the_path_together_and_a_refused_start_keeps_the_status(
        page, demo_model):
    fill(page, "model_name", str(demo_model))
    fill(page, "dataset", str(SAMPLE_DIR / "instructons.jsonl"))
    fill(page, "max_seq_length", "8")
    page.locator("#validate").click()
    problems = page.locator("#problems")
    expect(problems).to_contain_text("2 problems to fix")
    expect(problems).to_contain_text("max_seq_length")
    expect(problems).to_contain_text("does not exist")
    expect(page.locator("#run-status")).to_contain_text("No active run")
    page.locator("#start").click()
    expect(problems).to_contain_text("does not exist")
    page.wait_for_timeout(1500)  # a timer tick
    expect(page.locator("#run-status")).to_contain_text("No active run")
    page.screenshot(path=str(SHOTS / "02-two-problems.png"))


# Whether the REST API's command (the last code block) is cut off, or lies under its copy button.
CURL_LAYOUT = """root => {
  const blocks = root.querySelectorAll('.code_wrap'), last = blocks[blocks.length - 1];
  const pre = last.querySelector('pre');
  const button = last.querySelector('button').getBoundingClientRect();
  const range = document.createRange();
  range.selectNodeContents(pre);
  const under = Array.from(range.getClientRects()).some(r => r.width > 0 && r.right > button.left
      && r.left < button.right && r.bottom > button.top && r.top < button.bottom);
  return {cut: pre.scrollWidth > pre.clientWidth + 1, under_button: under};
}"""


def test_the_curl_command_is_whole_and_clear_of_its_copy_button(page):
    fill(page, "dataset", str(SAMPLE_SFT))
    fill(page, "max_seq_length", "64")
    page.locator("#validate").click()
    commands = page.locator("#commands")
    expect(commands).to_contain_text("Same job through the REST API")
    assert commands.evaluate(CURL_LAYOUT) == {"cut": False, "under_button": False}
    commands.screenshot(path=str(SHOTS / "03-commands.png"))


def test_the_page_follows_its_own_run_and_stop_acts_on_it(page):
    page.locator("#group-optimisation").get_by_text("Optimisation").click()
    fill(page, "max_steps", "400")
    page.locator("#start").click()
    expect(page.locator("#problems")).to_contain_text("Started run")
    status = page.locator("#run-status")
    expect(status).to_contain_text("The run this page started")
    expect(status).to_contain_text("step", timeout=180_000)
    stop = page.locator("#stop")
    expect(stop).to_be_enabled()
    # no GPU figures on a CPU: the third plot shows the worker's resident memory, titled so
    if not visible_gpus():
        expect(page.locator("#memory-plot")).to_contain_text("no GPU", timeout=60_000)
    page.wait_for_timeout(2500)  # the plots draw from their second point
    page.screenshot(path=str(SHOTS / "04-running.png"))
    stop.click()
    expect(page.locator("#problems")).to_contain_text("Stop requested")
    expect(status).to_contain_text("stopped", timeout=120_000)
    expect(stop).to_be_disabled()
    expect(status).not_to_contain_text("ETA")  # an ended run has no "ETA -"
    page.screenshot(path=str(SHOTS / "05-stopped.png"), full_page=True)


def test_the_playground_says_the_demo_model_is_tiny(page):
    page.get_by_role("tab", name="Playground").click()
    page.locator("#playground-run input").click()
    page.get_by_role("option").first.click()
    expect(page.locator("#playground-model-note")).to_contain_text("tiny demo model")
    page.screenshot(path=str(SHOTS / "06-playground.png"))


def test_the_runs_log_opens_at_its_end_and_empty_compare_tables_have_headers(page):
    page.get_by_role("tab", name="Runs").click()
    expect(page.locator("#history-summary")).to_contain_text("stopped")  # the run's details
    page.get_by_text("Log (end of train.log)").click()
    box = page.locator("#history-log textarea")
    expect(box).not_to_have_value("")
    page.wait_for_timeout(1000)
    scroll = box.evaluate("t => [t.scrollTop + t.clientHeight, t.scrollHeight, t.clientHeight]")
    assert scroll[1] > scroll[2], scroll  # the log is longer than the box
    assert scroll[0] >= scroll[1] - 2, scroll  # and it opened on its newest lines
    page.get_by_text("Compare runs").click()
    for table in ("#compare-settings", "#compare-outcomes"):
        header = page.locator(table).locator("thead").first
        expect(header).not_to_contain_text("1")
    expect(page.locator("#compare-outcomes thead").first).to_contain_text("final loss")
    page.screenshot(path=str(SHOTS / "07-runs.png"), full_page=True)
