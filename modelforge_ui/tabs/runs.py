"""The Runs tab: history of every job, a run's details, adapter download, rename, delete."""

from __future__ import annotations

import json
from pathlib import Path

import gradio as gr

from modelforge_ui import experiments, views
from modelforge_ui.tabs.context import Dashboard, make_zip, run_label
from trainers.errors import ModelForgeError
from trainers.runs.jobs import adapter_dir
from trainers.runs.process import log_tail


LOG_TO_END = """() => { setTimeout(() => {
  const box = document.querySelector('#history-log textarea');
  if (box) box.scrollTop = box.scrollHeight; }, 100); }"""


def build(app: Dashboard, tab: gr.Tab) -> None:
    with gr.Row():
        refresh_button = gr.Button("Refresh", size="sm", elem_id="history-refresh")
    table = gr.Dataframe(label="Runs (newest first; click a row to open it)", interactive=False,
                         elem_id="history-table")
    picked = gr.Dropdown(label="Run", choices=[], allow_custom_value=True, elem_id="history-run")
    summary = gr.Markdown(elem_id="history-summary")
    with gr.Row():
        new_name = gr.Textbox(label="New name", scale=3)
        rename_button = gr.Button("Rename", scale=1, interactive=not app.read_only)
        delete_button = gr.Button("Delete run and files", variant="stop", scale=1,
                                  interactive=not app.read_only)
    with gr.Row():  # modelforge_ui/experiments.py: resume and a run's links
        resume_button = gr.Button("Resume from last checkpoint", scale=1,
                                  elem_id="resume-run", interactive=not app.read_only)
        resume_note = gr.Markdown(elem_id="resume-note")
    links = gr.Markdown(elem_id="history-links")
    with gr.Row():
        download_button = gr.Button("Download adapter (zip)", elem_id="download-adapter")
        adapter_file = gr.File(label="Adapter", interactive=False, height=80)
    with gr.Accordion("Config", open=False):
        config_view = gr.Code(language="json", interactive=False)
    with gr.Accordion("Events (events.jsonl)", open=False):
        events_view = gr.Code(language=None, interactive=False)
    with gr.Accordion("Log (end of train.log)", open=False) as log_panel:
        log_view = gr.Textbox(lines=15, max_lines=15, show_label=False, elem_id="history-log")
    # The log arrives while the panel is closed, where the box cannot scroll: show its end (the
    # newest lines, not the library warnings at its start) when the panel opens.
    log_panel.expand(None, None, None, api_name=False, js=LOG_TO_END)

    def history(current=None):
        runs = app.runs()
        ids = [r["id"] for r in runs]
        value = current if current in ids else (ids[0] if ids else None)
        return views.history_table(runs), gr.update(choices=views.run_choices(runs, kind=None),
                                                    value=value)

    def details(run_id):
        run = app.get_run(run_id)
        if run is None:
            return "Pick a run.", "", "", "", ""
        events = app.manager.events(run_id)
        return (views.progress_markdown(run), json.dumps(run["config"], indent=2),
                views.events_text(events), log_tail(Path(run["run_dir"]), 20000), run["name"])

    def select_row(evt: gr.SelectData):
        return evt.row_value[0] if evt.row_value else gr.update()

    def rename(run_id, name):
        app.require_writable("rename a run")
        if not run_id:
            raise gr.Error("Pick a run first.")
        app.manager.registry.rename(run_id, name)
        return history(run_id)

    def delete(run_id):
        app.require_writable("delete a run")
        if not run_id:
            raise gr.Error("Pick a run first.")
        try:
            app.manager.delete(run_id)
        except ValueError as exc:
            raise gr.Error(f"{exc}.") from None
        return history()

    refresh_button.click(history, picked, [table, picked], api_name="history")
    tab.select(history, picked, [table, picked], api_name=False)
    table.select(select_row, None, picked, api_name=False)
    picked.change(details, picked, [summary, config_view, events_view, log_view, new_name],
                  api_name="run_details")
    rename_button.click(rename, [picked, new_name], [table, picked], api_name="rename_run")
    delete_button.click(delete, picked, [table, picked], api_name="delete_run")
    download_button.click(lambda run_id: adapter_zip(app, run_id), picked, adapter_file,
                          api_name="download_adapter")
    picked.change(lambda run_id: (experiments.links_markdown(app, app.get_run(run_id)), ""),
                  picked, [links, resume_note], api_name=False)
    resume_button.click(lambda run_id: experiments.resume_from_dashboard(app, run_id), picked,
                        resume_note, api_name="resume_run").then(
        history, picked, [table, picked], api_name=False)
    experiments.build_compare(app, tab, refresh_button)


def adapter_zip(app: Dashboard, run_id: str | None) -> str:
    run = app.get_run(run_id)
    if run is None:
        raise gr.Error("Pick a run first.")
    try:
        adapter_dir(run)  # a clear message while active or without an adapter
    except ModelForgeError as exc:
        raise gr.Error(f"{exc.message} Fix: {exc.hint}") from None
    from trainers.tools.model_card import hf_adapter_files  # with its model card (README.md)

    try:
        files = hf_adapter_files(run["run_dir"], run["name"])
    except ModelForgeError as exc:
        raise gr.Error(f"{exc.message} Fix: {exc.hint}") from None
    return str(make_zip(f"adapter-{run_label(run_id)}",
                        {f"adapter/{name}": value for name, value in files.items()}))
