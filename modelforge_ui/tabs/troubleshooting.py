"""The Troubleshooting tab: environment report, config checker, failed-run diagnosis and a
diagnostic bundle for bug reports."""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import pandas as pd

from modelforge_ui import views
from modelforge_ui.form import problems_markdown
from modelforge_ui.security import check_config_policy
from modelforge_ui.tabs.context import Dashboard, error_markdown, make_zip, run_label
from trainers.config import build_config, parse_config_text
from trainers.diagnostics import diagnose_run
from trainers.errors import ConfigError, ModelForgeError
from trainers.events import last_event, read_events
from trainers.runs.preflight import preflight_problems
from trainers.runs.process import log_tail
from trainers.tools.doctor import cached_checks

ENV_COLUMNS = ["check", "status", "value", "fix"]
DIAGNOSABLE = ("failed", "interrupted", "stopped")


def environment_checks(app: Dashboard, refresh: bool = False) -> list[dict]:
    """The environment report of trainers.tools.doctor, [{name, status, value, fix}, ...]: the
    server's cached one (shared with GET /api/doctor) unless `refresh`."""
    return cached_checks(app.settings.data_dir, refresh)[1]


def environment_table(checks: list[dict]) -> pd.DataFrame:
    return pd.DataFrame([[c.get("name"), c.get("status"), c.get("value"), c.get("fix") or ""]
                         for c in checks], columns=ENV_COLUMNS)


def check_config_text(app: Dashboard, text: str) -> str:
    """Every problem of a pasted JSON/YAML config with its fix: the schema's rules, then the
    server's path and trust_remote_code rules (as POST /api/config/check)."""
    if not (text or "").strip():
        return "Paste a config (JSON or YAML) first."
    try:
        cfg = check_config_policy(build_config(parse_config_text(text)), app.settings)
    except ModelForgeError as exc:
        return error_markdown(exc)
    late = preflight_problems(cfg, app.manager.devices)  # what Start / the worker refuse
    if late:
        return problems_markdown(late)
    return "**No problems: the config is valid.**"


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
    try:
        return build_config(config)
    except ConfigError:
        return None


def bundle(app: Dashboard, run_id: str | None) -> str:
    """A zip with the environment report and, when a run is picked, its config, events, log."""
    files: dict = {"environment.json": environment_checks(app)}
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
    with gr.Row():
        gr.Markdown("### Environment")
        env_refresh = gr.Button("Check again", size="sm", scale=0, elem_id="env-refresh")
    env_table = gr.Dataframe(headers=ENV_COLUMNS, interactive=False, wrap=True,
                             column_widths=["14%", "7%", "37%", "42%"],  # the fix is read whole
                             elem_id="env-report")
    with gr.Row():
        with gr.Column():
            gr.Markdown("### Config checker")
            pasted = gr.Code(label="Paste a config (JSON or YAML)", language="yaml",
                             interactive=True, elem_id="checker-text")
            check_button = gr.Button("Check", elem_id="checker-run")
            check_result = gr.Markdown(elem_id="checker-result")
        with gr.Column():
            gr.Markdown("### Failed-run diagnosis")
            failed_pick = gr.Dropdown(label="Run that did not succeed", choices=[],
                                      allow_custom_value=True, elem_id="diagnose-run")
            diagnosis = gr.Markdown(elem_id="diagnosis")
            diag_log = gr.Textbox(label="Log tail", lines=10, max_lines=10)
    gr.Markdown("### Diagnostic bundle (for a bug report)")
    with gr.Row():
        bundle_pick = gr.Dropdown(label="Include this run (optional)", choices=[], scale=2,
                                  allow_custom_value=True)
        bundle_button = gr.Button("Build the bundle (zip)", scale=1)
        bundle_file = gr.File(label="Bundle", interactive=False, height=80, scale=2)

    def choices():
        runs = app.runs()
        return (gr.update(choices=views.run_choices(runs, DIAGNOSABLE, kind=None)),
                gr.update(choices=views.run_choices(runs, kind=None)))

    env_refresh.click(lambda: environment_table(environment_checks(app, refresh=True)), None,
                      env_table, api_name="environment_report")
    tab.select(lambda: environment_table(environment_checks(app)), None, env_table,
               api_name=False)
    tab.select(choices, None, [failed_pick, bundle_pick], api_name="troubleshooting_runs")
    check_button.click(lambda text: check_config_text(app, text), pasted, check_result,
                       api_name="check_config")
    failed_pick.change(lambda rid: diagnose(app, rid), failed_pick, [diagnosis, diag_log],
                       api_name="diagnose_run")
    bundle_button.click(lambda rid: bundle(app, rid), bundle_pick, bundle_file,
                        api_name="diagnostic_bundle")
