"""The Runs tab's experiment tools: resume a run from its last checkpoint, what a run links to
(its TensorBoard logs, the run it resumed, the runs that resumed it), and runs side by side.

The data comes from trainers/runs/compare.py and trainers/runs/resume.py, the same functions
the REST API uses; these are their Gradio faces (plain functions of their data where possible,
so a test can call them).
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import pandas as pd

from modelforge_ui import views
from modelforge_ui.tabs.context import Dashboard, error_markdown
from trainers.errors import ModelForgeError
from trainers.runs import resume
from trainers.runs.compare import compare
from trainers.runs.sweep import list_sweeps, read_sweep, sweep_label
from trainers.tracking import tensorboard_dir, tracker_list

CURVE_TITLES = {"loss": ("loss", "Training loss"), "eval_loss": ("eval loss", "Eval loss"),
                "tokens_per_s": ("tokens/s", "Tokens per second"),
                "memory_gib": ("memory (GiB)", "Memory (GiB): GPU allocated, or the worker's "
                                                "resident memory on a CPU")}
OUTCOME_COLUMNS = [("status", "status"), ("time_s", "time"), ("steps", "steps"),
                   ("tokens_per_s", "tokens/s"), ("peak_gpu_mem_gib", "peak GPU mem (GiB)"),
                   ("peak_rss_gib", "peak RSS (GiB)"), ("final_loss", "final loss"),
                   ("final_eval_loss", "final eval loss"), ("best_eval_loss", "best eval loss"),
                   ("best_eval_step", "best eval step")]


# --- what a run links to -----------------------------------------------------------------------

def links_markdown(app: Dashboard, run: dict | None) -> str:
    """TensorBoard logs, resume links and whether the run can be resumed."""
    if run is None or run.get("kind") != "train":
        return ""
    lines = []
    logs = tensorboard_dir(run["run_dir"])
    if logs.is_dir():
        lines.append(f"**TensorBoard logs:** `{logs}` (view them with "
                     f"`tensorboard --logdir {logs}`)")
    trackers = [t for t in tracker_list(run["config"].get("report_to")) if t != "tensorboard"]
    if trackers:
        lines.append(f"**Trackers:** {', '.join(trackers)} (see the tracking events in "
                     "events.jsonl for where their files went)")
    if run["config"].get("resume_from"):
        lines.append(f"**Resumed from** run `{run['config']['resume_from']}`")
    later = resume.resumed_by(app.manager.registry, run["id"])
    if later:
        lines.append("**Resumed by** " + ", ".join(f"`{r}`" for r in later))
    found = resume.last_checkpoint(run["run_dir"])
    if found is not None:
        lines.append(f"**Last checkpoint:** step {found[1]} (`{found[0]}`)")
    return "\n\n".join(lines)


def resume_from_dashboard(app: Dashboard, run_id: str | None) -> str:
    """Queue the run that continues `run_id`; the message says what happened or why not."""
    app.require_writable("resume a run")
    if not run_id:
        raise gr.Error("Pick a run first.")
    from modelforge_ui.api.experiments import resume_run

    try:
        run = resume_run(app.manager, app.settings, run_id, None, "dashboard")
    except KeyError:
        return f"**No run with id `{run_id}`.**"
    except ModelForgeError as exc:
        return error_markdown(exc)
    step = resume.read_resume_file(Path(run["run_dir"]))["step"]
    return (f"Resumed as run `{run['id']}`: it continues `{run_id}` from step {step}. "
            "Pick it in the list above to follow it.")


# --- runs side by side -------------------------------------------------------------------------

def _label(run: dict) -> str:
    return f"{run['name']} ({run['id'][-6:]})"


def curve_frame(data: dict, key: str) -> pd.DataFrame | None:
    """One curve of every compared run, with a `run` column for the plot's colours; None
    without points (a coloured line plot first drawn empty never shows its lines)."""
    title = CURVE_TITLES[key][0]
    rows = [(step, value, _label(run)) for run in data.get("runs", [])
            for step, value in run["curves"][key]]
    if not rows:
        return None
    return pd.DataFrame({"step": pd.Series([r[0] for r in rows], dtype="int64"),
                         title: pd.Series([r[1] for r in rows], dtype="float64"),
                         "run": pd.Series([r[2] for r in rows], dtype="object")})


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.4g}"
    return str(value)


def settings_table(data: dict) -> pd.DataFrame:
    """The config fields that differ: one row a field, one column a run."""
    runs = data.get("runs", [])
    rows = [[row["field"], *(_cell(row["values"][r["id"]]) for r in runs)]
            for row in data.get("differing", [])]
    return pd.DataFrame(rows, columns=["field", *(_label(r) for r in runs)])


def outcomes_table(data: dict) -> pd.DataFrame:
    rows = []
    for run in data.get("runs", []):
        out = run["outcomes"]
        cells = [views.fmt_duration(out["time_s"]) if key == "time_s" else _cell(out[key])
                 for key, _ in OUTCOME_COLUMNS]
        rows.append([_label(run), *cells])
    return pd.DataFrame(rows, columns=["run", *(title for _, title in OUTCOME_COLUMNS)])


def comparison(app: Dashboard, ids: list[str] | None):
    """Everything the compare panel shows: a note, four plots, two tables."""
    try:
        data = compare(app.manager, ids or [])
    except ModelForgeError as exc:
        data, note = {}, error_markdown(exc)
    else:
        note = f"Comparing {len(data['runs'])} runs; {len(data['differing'])} settings differ."
    return (note, *(curve_frame(data, key) for key in CURVE_TITLES), settings_table(data),
            outcomes_table(data))


def build_compare(app: Dashboard, tab: gr.Tab, refresh_button: gr.Button) -> None:
    """The "Compare runs" panel, at the end of the Runs tab."""
    with gr.Accordion("Compare runs", open=False, elem_id="compare-panel"):
        with gr.Row():
            picked = gr.Dropdown(label="Runs to compare (two or more)", choices=[],
                                 multiselect=True, allow_custom_value=True, scale=4,
                                 elem_id="compare-runs")  # ids are checked by compare()
            button = gr.Button("Compare", scale=1, elem_id="compare-button")
        sweep = gr.Dropdown(label="Or a sweep's runs (queued from the API or the CLI with "
                                  "fields given as lists)", choices=[],
                            allow_custom_value=True, elem_id="compare-sweep")  # read_sweep checks
        note = gr.Markdown(elem_id="compare-note")
        plots = []
        for i, (key, (column, title)) in enumerate(CURVE_TITLES.items()):
            if i % 2 == 0:
                row = gr.Row()
            with row:
                plots.append(gr.LinePlot(None, x="step", y=column, color="run",
                                         title=title, height=240, elem_id=f"compare-{key}"))
        # empty until Compare, under their own headers (an empty Dataframe is headed "1 2 3")
        differing = gr.Dataframe(settings_table({}), label="Settings that differ",
                                 interactive=False, wrap=True, elem_id="compare-settings")
        outcome = gr.Dataframe(outcomes_table({}), label="Outcomes", interactive=False,
                               wrap=True, elem_id="compare-outcomes")

    def choices(current):
        options = views.run_choices(app.runs(kind="train"))
        keep = [c for c in current or [] if c in {value for _, value in options}]
        return gr.update(choices=options, value=keep)

    def sweep_choices():
        return gr.update(choices=[(sweep_label(s), s["id"]) for s in
                                  list_sweeps(app.manager.registry.data_dir)])

    def sweep_runs(sweep_id):
        if not sweep_id:
            return gr.skip()
        try:
            run_ids = read_sweep(app.manager.registry.data_dir, sweep_id)["run_ids"]
        except ModelForgeError as exc:
            raise gr.Error(f"{exc.message} {exc.hint}") from None
        return gr.update(choices=views.run_choices(app.runs(kind="train")), value=run_ids)

    shown = [note, *plots, differing, outcome]
    tab.select(choices, picked, picked, api_name=False)
    tab.select(sweep_choices, None, sweep, api_name=False)
    refresh_button.click(choices, picked, picked, api_name=False)
    refresh_button.click(sweep_choices, None, sweep, api_name=False)
    button.click(lambda ids: comparison(app, ids), picked, shown, api_name="compare_runs")
    sweep.change(sweep_runs, sweep, picked, api_name="sweep_runs").then(
        lambda ids: comparison(app, ids), picked, shown, api_name=False)

