"""The Runs tab's experiment tools in a real browser (Playwright driving Debian's Chromium
against `modelforge run`): compare two runs, resume a stopped one, see the eval curve's data.
Screenshots go to test-artifacts/browser/ (look at them)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from trainers.tools.demo import SAMPLE_DIR, SAMPLE_SFT
from ui_server import ROOT, free_port, modelforge_run_args, running_server

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs Debian's chromium: apt-get install -y chromium")]
playwright_api = pytest.importorskip("playwright.sync_api")

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
SHOTS = ROOT / "test-artifacts" / "browser"


def wait_done(url: str, run_id: str, timeout: float = 900) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        run = httpx.get(f"{url}/api/runs/{run_id}", timeout=30).json()
        if run["status"] not in ("queued", "running"):
            return run
        time.sleep(0.5)
    raise AssertionError(f"run {run_id} did not end")


@pytest.fixture(scope="module")
def server(demo_model, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("browser-experiments")
    port = free_port()
    args = modelforge_run_args(port, data_dir, demo_model, SAMPLE_DIR)
    # two jobs at once on the CPU (MODELFORGE_JOBS_PER_DEVICE, a documented setting): the runs
    # compared below train side by side (one job at a time is test_faults.py's load test)
    with running_server(args, data_dir / "server.log", port=port,
                        env={"MODELFORGE_JOBS_PER_DEVICE": "2"}) as url:
        yield url


@pytest.fixture(scope="module")
def runs(server, demo_model):
    base = {"model_name": str(demo_model), "dataset": str(SAMPLE_SFT), "max_seq_length": 64,
            "max_steps": 4, "per_device_train_batch_size": 4, "lora_r": 8, "lora_alpha": 16,
            "lora_dropout": 0.0, "eval_split": 0.1, "eval_steps": 2}
    ids = []
    for lr, name in ((2e-3, "slow lr"), (8e-3, "fast lr")):
        response = httpx.post(f"{server}/api/start_training", timeout=60,
                              json={**base, "learning_rate": lr, "name": name})
        assert response.status_code == 202, response.text
        ids.append(response.json()["run_id"])
    for run_id in ids:
        assert wait_done(server, run_id)["status"] == "succeeded"
    return ids


@pytest.fixture(scope="module")
def page(server):
    SHOTS.mkdir(parents=True, exist_ok=True)
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1400})
        page.set_default_timeout(30_000)
        yield page
        browser.close()


def pick(page, elem_id: str, text: str) -> None:
    """Choose the option containing `text` in a Gradio dropdown."""
    box = page.locator(f"#{elem_id} input")
    box.click()
    box.fill(text)
    option = page.locator(f"#{elem_id} [role=option]", has_text=text).first
    playwright_api.expect(option).to_be_visible()
    page.wait_for_timeout(300)  # the list settles after filtering
    box.press("Enter")  # the highlighted (only matching) option
    page.wait_for_timeout(300)


def test_compare_two_runs_in_the_runs_tab(page, server, runs):
    expect = playwright_api.expect
    page.goto(server + "/")
    page.get_by_role("tab", name="Runs").click()
    expect(page.locator("#history-table")).to_contain_text(runs[0])
    page.get_by_text("Compare runs").click()
    for run_id in runs:
        pick(page, "compare-runs", run_id)
    page.locator("#compare-button").click()
    expect(page.locator("#compare-note")).to_contain_text("Comparing 2 runs")
    settings = page.locator("#compare-settings")
    expect(settings).to_contain_text("learning_rate")
    expect(settings).to_contain_text("0.008")
    outcomes = page.locator("#compare-outcomes")
    expect(outcomes).to_contain_text("slow lr")
    expect(outcomes).to_contain_text("fast lr")
    expect(outcomes).to_contain_text("succeeded")
    for key in ("loss", "eval_loss", "tokens_per_s", "memory_gib"):
        expect(page.locator(f"#compare-{key}")).to_be_visible()
    page.wait_for_timeout(1500)  # let the plots draw
    page.locator("#compare-panel").screenshot(path=str(SHOTS / "10-compare.png"))

    # one run alone is refused with the reason, not an error page
    page.locator("#compare-runs").get_by_role("button").first.click()  # remove a chosen run
    page.locator("#compare-button").click()
    expect(page.locator("#compare-note")).to_contain_text("at least two run ids")


def test_details_show_the_best_eval_loss_and_a_finished_run_cannot_resume(page, server, runs):
    expect = playwright_api.expect
    page.goto(server + "/")
    page.get_by_role("tab", name="Runs").click()
    pick(page, "history-run", runs[0])
    expect(page.locator("#history-summary")).to_contain_text("best eval loss")
    page.locator("#resume-run").click()
    expect(page.locator("#resume-note")).to_contain_text("finished all its steps")
    page.screenshot(path=str(SHOTS / "11-run-details.png"), full_page=True)


def test_the_dashboard_compare_and_the_training_plot_data_through_gradio_client(server, runs):
    from gradio_client import Client

    client = Client(server + "/", verbose=False)
    try:
        note, loss, eval_loss, speed, memory, settings, outcomes = client.predict(
            runs, api_name="/compare_runs")
    finally:
        client.close()
    assert "Comparing 2 runs" in note
    assert {row[2] for row in loss["data"]} == {"slow lr (" + runs[0][-6:] + ")",
                                                "fast lr (" + runs[1][-6:] + ")"}
    assert sorted({row[0] for row in eval_loss["data"]}) == [2, 4]
    assert len(memory["data"]) == 8 and len(speed["data"]) == 8
    assert any(row[0] == "learning_rate" for row in settings["data"])


def test_the_training_tab_plots_eval_loss_beside_the_training_loss(page, server, demo_model):
    """A run with an eval split, started from this page (the Training tab follows the run its
    page started): its status has the best eval loss and its plot both lines."""
    from test_browser import fill_demo_run

    expect = playwright_api.expect
    page.goto(server + "/")
    fill_demo_run(page, demo_model, max_steps=4, eval_split="0.1", eval_steps="2")
    page.locator("#start").click()
    expect(page.locator("#problems")).to_contain_text("Started run")
    expect(page.locator("#run-status")).to_contain_text("succeeded", timeout=300_000)
    expect(page.locator("#run-status")).to_contain_text("best eval loss")
    plot = page.locator("#loss-plot")
    expect(plot).to_contain_text("split")  # the legend of the two lines
    expect(plot).to_contain_text("eval")
    expect(plot).to_contain_text("train")
    page.wait_for_timeout(1000)
    plot.screenshot(path=str(SHOTS / "12-training-loss-and-eval.png"))


def test_resume_from_the_dashboard_makes_a_linked_run(server, runs, demo_model):
    """The Runs tab's Resume button (through gradio_client): a stopped run continues."""
    from gradio_client import Client

    config = {"model_name": str(demo_model), "dataset": str(SAMPLE_SFT), "max_seq_length": 64,
              "max_steps": 12, "per_device_train_batch_size": 16,
              "gradient_accumulation_steps": 8, "lora_r": 8, "lora_alpha": 16,
              "learning_rate": 2e-3, "name": "to resume"}
    run_id = httpx.post(f"{server}/api/start_training", json=config, timeout=60).json()["run_id"]
    deadline = time.time() + 900
    while time.time() < deadline:  # stop it once it has trained a step
        run = httpx.get(f"{server}/api/runs/{run_id}", timeout=30).json()
        if (run.get("progress") or {}).get("step", 0) >= 1:
            break
        time.sleep(0.3)
    httpx.post(f"{server}/api/runs/{run_id}/stop", timeout=30)
    stopped = wait_done(server, run_id)
    assert stopped["status"] == "stopped"
    client = Client(server + "/", verbose=False)
    try:
        note = client.predict(run_id, api_name="/resume_run")
    finally:
        client.close()
    assert f"it continues `{run_id}` from step {stopped['summary']['steps']}" in note, note
    new_id = note.split("`")[1]
    resumed = wait_done(server, new_id)
    assert resumed["status"] == "succeeded" and resumed["config"]["resume_from"] == run_id
    assert resumed["summary"]["steps"] == 12


def test_a_sweep_opens_in_the_runs_tabs_compare(page, server, demo_model):
    """A 1 x 2 sweep queued over the API; the Compare panel's sweep picker fills the comparison
    with its runs."""
    response = httpx.post(f"{server}/api/start_training", timeout=60, json={
        "model_name": str(demo_model), "dataset": str(SAMPLE_SFT), "max_seq_length": 64,
        "max_steps": 2, "per_device_train_batch_size": 4, "lora_dropout": 0.0,
        "lora_r": [4, 8], "name": "grid"})
    assert response.status_code == 202, response.text
    sweep = response.json()
    for run_id in sweep["run_ids"]:
        assert wait_done(server, run_id)["status"] == "succeeded"
    expect = playwright_api.expect
    page.goto(server + "/")
    page.get_by_role("tab", name="Runs").click()
    page.get_by_text("Compare runs").click()
    pick(page, "compare-sweep", sweep["sweep_id"])
    expect(page.locator("#compare-note")).to_contain_text("Comparing 2 runs")
    expect(page.locator("#compare-outcomes")).to_contain_text("grid lora_r=4")
    expect(page.locator("#compare-outcomes")).to_contain_text("grid lora_r=8")
    expect(page.locator("#compare-settings")).to_contain_text("lora_r")
