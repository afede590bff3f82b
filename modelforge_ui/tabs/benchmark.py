"""The Benchmark tab: a matched Hugging Face-vs-Unsloth benchmark (trainers.benchmark).

The spec form is generated from BenchmarkSpec like the training form; a run is a job of kind
"benchmark" in the same queue. Results come from RUN_DIR/results.json: the table, bar plots of
tokens/s and peak VRAM, the loss curves of every variant overlaid, and the JSON/Markdown/CSV
files to download.
"""

from __future__ import annotations

import json
from pathlib import Path

import gradio as gr
import pandas as pd

from modelforge_ui import views
from modelforge_ui.form import ConfigForm
from modelforge_ui.security import check_spec_policy
from modelforge_ui.tabs.context import Dashboard, error_markdown
from trainers.benchmark.report import RESULT_FILES, TABLE_HEADER, table_cells
from trainers.benchmark.spec import MODE_LABELS, BenchmarkSpec, build_spec
from trainers.errors import ModelForgeError
from trainers.runs.jobs import submit_benchmark


def spec_form() -> ConfigForm:
    return ConfigForm(BenchmarkSpec, build_spec, default_group="benchmark",
                      open_groups=("benchmark",))


def results(run: dict) -> dict | None:
    path = Path(run["run_dir"]) / "results.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def status_markdown(run: dict | None, events: list[dict]) -> str:
    if run is None:
        return "No benchmark yet: fill the spec and press **Run benchmark**."
    head = f"**{run['name']}** (`{run['id']}`): **{run['status']}**"
    lines = [head]
    current = next((e for e in reversed(events) if e.get("type") == "variant_started"), None)
    progress = next((e for e in reversed(events) if e.get("type") == "progress"), None)
    if run["status"] == "running" and current:
        step = f", step {views.fmt_number(progress.get('step'), 0)} / " \
            f"{views.fmt_number(progress.get('total_steps'), 0)}" \
            if progress and progress.get("seq", 0) > current["seq"] else ""
        lines.append(f"variant {current.get('index')} of {current.get('total')}: "
                     f"**{current.get('provider')} {current.get('mode')}**{step}")
    for e in events:  # a field of the wrong type shows as "-" (see views.number)
        if e.get("type") == "variant_finished":
            lines.append(f"- {e.get('name')}: {views.fmt_number(e.get('tokens_per_s'), 0)} "
                         f"tokens/s, median step {views.fmt_number(e.get('median_step_s'), 3)} s")
        elif e.get("type") == "variant_failed":
            lines.append(f"- {e['name']}: failed: {e.get('message')}")
    summary = run.get("summary") or {}
    if run["status"] in ("failed", "interrupted") and summary.get("message"):
        lines.append(views.diagnosis_markdown(summary))
    return "\n\n".join(lines)


def variant_label(provider: str, mode: str) -> str:
    return f"{provider} · {MODE_LABELS.get(mode, mode)}"


def result_views(summary: dict | None) -> tuple:
    """(table, tokens/s bars, VRAM bars, loss overlay) of a results.json."""
    if summary is None:
        return (pd.DataFrame(columns=TABLE_HEADER), _bars([], "tokens/s"),
                _bars([], "peak VRAM GiB"), _curves([]))
    rows = summary["table"]
    table = pd.DataFrame([table_cells(r) for r in rows], columns=TABLE_HEADER)
    speed = _bars([(variant_label(r["provider"], r["mode"]), r.get("tokens_per_s"))
                   for r in rows], "tokens/s")
    memory = _bars([(variant_label(r["provider"], r["mode"]), r.get("peak_allocated_gib"))
                    for r in rows], "peak VRAM GiB")
    curves = _curves([(run["name"], step, loss) for run in summary["runs"]
                      if run["status"] == "ok"
                      for step, loss in enumerate(run["loss"]["curve"], start=1)
                      if loss is not None])
    return table, speed, memory, curves


def _bars(points: list[tuple], title: str) -> pd.DataFrame:
    points = [p for p in points if p[1] is not None]
    return pd.DataFrame({"variant": pd.Series([p[0] for p in points], dtype="object"),
                         title: pd.Series([p[1] for p in points], dtype="float64")})


def _curves(points: list[tuple]) -> pd.DataFrame | None:
    # None, not an empty frame: a colored line plot first drawn empty never shows its lines.
    if not points:
        return None
    return pd.DataFrame({"run": pd.Series([p[0] for p in points], dtype="object"),
                         "step": pd.Series([p[1] for p in points], dtype="int64"),
                         "loss": pd.Series([p[2] for p in points], dtype="float64")})


def refresh(app: Dashboard, run_id: str | None, shown: str | None):
    """Everything the results side shows; skipped when nothing changed since `shown`."""
    run = app.get_run(run_id)
    events = app.manager.events(run_id) if run else []
    results_file = Path(run["run_dir"]) / "results.json" if run else None
    key = json.dumps([run_id, run and run["status"], len(events),
                      results_file.stat().st_mtime if results_file and results_file.is_file()
                      else None])
    if key == shown:
        return (gr.skip(),) * 8 + (key,)
    summary = results(run) if run else None
    table, speed, memory, curves = result_views(summary)
    report = (Path(run["run_dir"]) / "results.md").read_text(encoding="utf-8") \
        if summary and (Path(run["run_dir"]) / "results.md").is_file() else ""
    files = [str(Path(run["run_dir"]) / n) for n in RESULT_FILES
             if (Path(run["run_dir"]) / n).is_file()] if run else []
    return (status_markdown(run, events), table, speed, memory, curves, report, files or None,
            gr.skip(), key)


def build(app: Dashboard, tab: gr.Tab) -> None:
    form = spec_form()
    shown = gr.State(None)
    with gr.Row():
        with gr.Column(scale=2):
            gr.Markdown("Every variant gets the same tokenized rows, seed, LoRA settings, "
                        "optimizer and padding; each runs in its own process.")
            inputs = form.render()
            with gr.Row():
                run_button = gr.Button("Run benchmark", variant="primary",
                                       interactive=not app.read_only, elem_id="bench-run")
                stop_button = gr.Button("Stop", variant="stop", interactive=not app.read_only)
            message = gr.Markdown(elem_id="bench-message")
        with gr.Column(scale=3):
            picked = gr.Dropdown(label="Benchmark", choices=[], allow_custom_value=True,
                                 elem_id="bench-run-picker")
            status = gr.Markdown(status_markdown(None, []), elem_id="bench-status")
            empty = result_views(None)
            table = gr.Dataframe(empty[0], label="Results", interactive=False, wrap=True,
                                 elem_id="bench-table")
            with gr.Row():
                # Bars start at 0, or their lengths would exaggerate the differences.
                speed = gr.BarPlot(empty[1], x="variant", y="tokens/s", title="Tokens per second",
                                   y_lim=[0, None], height=240)
                memory = gr.BarPlot(empty[2], x="variant", y="peak VRAM GiB", y_lim=[0, None],
                                    title="Peak VRAM (GiB; empty on a CPU)", height=240)
            curves = gr.LinePlot(empty[3], x="step", y="loss", color="run",
                                 title="Loss per step, every variant", height=260)
            files = gr.File(label="Export (results.json, .md, .csv)", file_count="multiple",
                            interactive=False)
            with gr.Accordion("Report (results.md)", open=False):
                report = gr.Markdown()
    timer = gr.Timer(2.0)
    outputs = [status, table, speed, memory, curves, report, files, message, shown]

    def choices(current=None):
        runs = app.runs(kind="benchmark")
        ids = [r["id"] for r in runs]
        value = current if current in ids else (ids[0] if ids else None)
        return gr.update(choices=views.run_choices(runs, kind="benchmark"), value=value)

    def start(*values):
        app.require_writable("run a benchmark")
        try:
            spec = check_spec_policy(form.validate(list(values)), app.settings)
        except ModelForgeError as exc:
            return error_markdown(exc), gr.update()
        run = submit_benchmark(app.manager, spec, source="dashboard")
        return f"Queued benchmark `{run['id']}`.", choices(run["id"])

    def stop(run_id):
        app.require_writable("stop a benchmark")
        if not run_id:
            return "No benchmark to stop."
        run = app.manager.stop(run_id)
        return f"Stop requested for `{run_id}` (now {run['status']})."

    run_button.click(start, inputs, [message, picked], api_name="run_benchmark")
    stop_button.click(stop, picked, message, api_name="stop_benchmark")
    tab.select(choices, picked, picked, api_name="benchmark_runs")
    picked.change(lambda rid: refresh(app, rid, None), picked, outputs,
                  api_name="benchmark_results")
    timer.tick(lambda rid, key: refresh(app, rid, key), [picked, shown], outputs, api_name=False,
               show_progress="hidden")
