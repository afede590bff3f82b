"""The Troubleshooting tab: environment report, config checker, failed-run diagnosis and a
diagnostic bundle for bug reports."""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import pandas as pd

from modelforge_ui import views
from modelforge_ui.form import problems_markdown
from modelforge_ui.tabs.context import Dashboard, make_zip, run_label
from trainers.config import check_config, parse_config_text
from trainers.diagnostics import diagnose_run
from trainers.errors import ConfigError
from trainers.events import last_event, read_events
from trainers.runs import log_tail

ENV_COLUMNS = ["check", "status", "value", "fix"]
DIAGNOSABLE = ("failed", "interrupted", "stopped")


def environment_checks() -> list[dict]:
    """The environment report of trainers.doctor: [{name, status, value, fix}, ...]."""
    from trainers import doctor

    return doctor.run_checks()


def environment_table(checks: list[dict]) -> pd.DataFrame:
    return pd.DataFrame([[c.get("name"), c.get("status"), c.get("value"), c.get("fix") or ""]
                         for c in checks], columns=ENV_COLUMNS)


def check_config_text(text: str) -> str:
    """Every problem of a pasted JSON/YAML config, each with its fix (as the API says them)."""
    if not (text or "").strip():
        return "Paste a config (JSON or YAML) first."
    try:
        problems = check_config(parse_config_text(text))
    except ConfigError as exc:
        problems = exc.problems
    return problems_markdown(problems) if problems else "**No problems: the config is valid.**"


def diagnose(app: Dashboard, run_id: str | None) -> tuple[str, str]:
    """(diagnosis markdown, log tail) of a run that did not succeed."""
    run = app.get_run(run_id)
    if run is None:
        return "Pick a failed run.", ""
    run_dir = Path(run["run_dir"])
    tail = log_tail(run_dir, 8000)
    failed = last_event(read_events(run_dir), "failed") or run.get("summary")
    diag = diagnose_run(failed, tail, _config_or_none(run["config"]))
    return views.diagnosis_markdown(diag), tail


def _config_or_none(config: dict):
    """The run's TrainConfig for the OOM remedies (None for other kinds of job)."""
    from trainers.config import build_config

    try:
        return build_config(config)
    except ConfigError:
        return None


def bundle(app: Dashboard, run_id: str | None) -> str:
    """A zip with the environment report and, when a run is picked, its config, events, log."""
    files: dict = {"environment.json": environment_checks()}
    run = app.get_run(run_id)
    name = "modelforge-diagnostics"
    if run is not None:
        run_dir = Path(run["run_dir"])
        name += f"-{run_label(run['id'])}"
        files.update({"run.json": {k: v for k, v in run.items() if k != "progress"},
                      "config.json": run_dir / "config.json",
                      "events.jsonl": run_dir / "events.jsonl",
                      "train.log": run_dir / "train.log"})
    return str(make_zip(name, files))


def build(app: Dashboard, tab: gr.Tab) -> None:
    gr.Markdown("### Environment")
    env_refresh = gr.Button("Check the environment", size="sm", elem_id="env-refresh")
    env_table = gr.Dataframe(headers=ENV_COLUMNS, interactive=False, wrap=True,
                             elem_id="env-report")

    gr.Markdown("### Config checker")
    pasted = gr.Code(label="Paste a config (JSON or YAML)", language="yaml", interactive=True,
                     elem_id="checker-text")
    check_button = gr.Button("Check", elem_id="checker-run")
    check_result = gr.Markdown(elem_id="checker-result")

    gr.Markdown("### Failed-run diagnosis")
    failed_pick = gr.Dropdown(label="Run that did not succeed", choices=[],
                              elem_id="diagnose-run")
    diagnosis = gr.Markdown(elem_id="diagnosis")
    diag_log = gr.Textbox(label="Log tail", lines=12, max_lines=12)

    gr.Markdown("### Diagnostic bundle (for a bug report)")
    bundle_pick = gr.Dropdown(label="Include this run (optional)", choices=[])
    bundle_button = gr.Button("Build the bundle (zip)")
    bundle_file = gr.File(label="Bundle", interactive=False)

    def report():
        return environment_table(environment_checks())

    def choices():
        runs = app.runs()
        return (gr.update(choices=views.run_choices(runs, DIAGNOSABLE, kind=None)),
                gr.update(choices=views.run_choices(runs, kind=None)))

    env_refresh.click(report, None, env_table, api_name="environment_report")
    tab.select(report, None, env_table, api_name=False).then(
        choices, None, [failed_pick, bundle_pick], api_name=False)
    check_button.click(check_config_text, pasted, check_result, api_name="check_config")
    failed_pick.change(lambda rid: diagnose(app, rid), failed_pick, [diagnosis, diag_log],
                       api_name="diagnose_run")
    bundle_button.click(lambda rid: bundle(app, rid), bundle_pick, bundle_file,
                        api_name="diagnostic_bundle")
