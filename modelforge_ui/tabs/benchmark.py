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

from modelforge_ui import benchmark_view, views
from modelforge_ui.form import ConfigForm
from modelforge_ui.security import check_spec_policy
from modelforge_ui.tabs.context import Dashboard, error_markdown
from trainers.benchmark.report import RESULT_FILES
from trainers.benchmark.spec import (GPU_ONLY_MODES, MODE_LABELS, QUICK, QUICK_GIVES_UP,
                                     BenchmarkSpec, build_spec, default_modes)
from trainers.benchmark.variant import variant_name
from trainers.errors import ModelForgeError
from trainers.runs.jobs import submit_benchmark

# What a person sets for most benchmarks, open at the top; the rest is collapsed.
ESSENTIALS = ("model", "synthetic_weights", "providers", "modes", "max_seq_length",
              "batch_size", "steps", "repeats")
ESSENTIAL_GROUP, MORE_GROUP = "essentials", "more"
TITLES = {ESSENTIAL_GROUP: "Model, providers, modes and shape",
          MORE_GROUP: "More settings (data, LoRA, optimizer, judging: the same for every variant)"}
HIDDEN = ("invocation",)  # the CLI fills it with its command line; not an input


def spec_form() -> ConfigForm:
    """The spec's form: the essentials open first, the rest collapsed, `invocation` left out
    (an empty one is what a dashboard run records)."""
    form = ConfigForm(BenchmarkSpec, build_spec, default_group="benchmark",
                      open_groups=(ESSENTIAL_GROUP,), titles=TITLES)
    form.specs = [s for s in form.specs if s.name not in HIDDEN]
    for spec in form.specs:
        spec.group = ESSENTIAL_GROUP if spec.name in ESSENTIALS else MORE_GROUP
    return form


def initial_values(app: Dashboard) -> dict:
    """The form's starting values on this server: the demo model with --demo, and no GPU-only
    mode on a machine without a GPU."""
    values: dict = {}
    if getattr(app.settings, "demo", False):
        values.update(model=str(app.settings.demo_model_dir), max_seq_length=256,
                      batch_size=4, steps=10)
    if app.manager.devices == ["cpu"]:
        values["modes"] = default_modes(has_gpu=False)
    return values


def mark_gpu_only(form: ConfigForm, app: Dashboard) -> None:
    """On a machine without a GPU the GPU-only modes stay visible, labelled unavailable with
    the reason (choosing one is refused before the run, naming it)."""
    if app.manager.devices != ["cpu"]:
        return
    modes = form.component("modes")
    modes.choices = [(f"{value} (unavailable: needs a CUDA GPU, none here)"
                      if value in GPU_ONLY_MODES else label, value)
                     for label, value in modes.choices]
    modes.info = (f"{modes.info} This machine has no GPU: "
                  + "; ".join(f"{m} is unavailable ({why})" for m, why in GPU_ONLY_MODES.items())
                  + ".")


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
    """(table, tokens/s bars, VRAM bars, loss overlay) of a results.json (read defensively:
    see modelforge_ui.benchmark_view)."""
    if summary is None:
        return (benchmark_view.empty_table(), _bars([], "tokens/s"),
                _bars([], "peak VRAM GiB"), _curves([]))
    rows = [r for r in summary.get("table") or [] if isinstance(r, dict)]
    table = benchmark_view.compact_table(summary)
    key = benchmark_view.speed_key(summary)
    speed = _bars([(variant_label(r.get("provider"), r.get("mode")), views.number(r.get(key)))
                   for r in rows], "tokens/s")
    memory = _bars([(variant_label(r.get("provider"), r.get("mode")),
                     views.number(r.get("peak_allocated_gib"))) for r in rows], "peak VRAM GiB")
    runs = [r for r in summary.get("runs") or [] if isinstance(r, dict) and r.get("status") == "ok"]
    curves = _curves([(run.get("name"), step, loss) for run in runs
                      for step, loss in enumerate((run.get("loss") or {}).get("curve") or [],
                                                  start=1)
                      if views.number(loss) is not None])
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
    """Everything the results side shows; skipped when nothing changed since `shown`. Then
    the verdict, and the picker's labels (a run's status in them follows the run)."""
    run = app.get_run(run_id)
    events = app.manager.events(run_id) if run else []
    results_file = Path(run["run_dir"]) / "results.json" if run else None
    key = json.dumps([run_id, run and run["status"], len(events),
                      results_file.stat().st_mtime if results_file and results_file.is_file()
                      else None])
    if key == shown:
        return (gr.skip(),) * 8 + (key, gr.skip(), gr.skip())
    summary = results(run) if run else None
    table, speed, memory, curves = result_views(summary)
    report = (Path(run["run_dir"]) / "results.md").read_text(encoding="utf-8") \
        if summary and (Path(run["run_dir"]) / "results.md").is_file() else ""
    files = [str(Path(run["run_dir"]) / n) for n in RESULT_FILES
             if (Path(run["run_dir"]) / n).is_file()] if run else []
    picker = gr.update(choices=views.run_choices(app.runs(kind="benchmark"), kind="benchmark"))
    return (status_markdown(run, events), table, speed, memory,
            curve_update(curves, planned_variants(run)), report,
            files or None, gr.skip(), key,
            benchmark_view.verdict_markdown(summary, run and run["status"]), picker)


PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf"]


def planned_variants(run: dict | None) -> list[str]:
    """The variant names the benchmark will run, in order, from its recorded spec."""
    spec = (run or {}).get("config") or {}
    try:
        return [variant_name(p, m, r) for r, m, p in BenchmarkSpec(**spec).variants()]
    except Exception:  # noqa: BLE001 - another version's spec: the names come with the results
        return []


def curve_update(curves: pd.DataFrame | None, planned: list[str]):
    """The loss overlay, with every planned variant named from the start: the plot fixes its
    colors (and legend) when it is first drawn, then only swaps the data, so a variant that
    finished later got no line until a reload. A variant not finished yet is one empty point
    (loss NaN: no line, but its legend entry and color are there)."""
    names = list(dict.fromkeys(planned + (list(curves["run"]) if curves is not None else [])))
    if not names:
        return None
    waiting = [n for n in names if curves is None or n not in set(curves["run"])]
    if waiting:
        empty = pd.DataFrame({"run": pd.Series(waiting, dtype="object"),
                              "step": pd.Series([1] * len(waiting), dtype="int64"),
                              "loss": pd.Series([float("nan")] * len(waiting), dtype="float64")})
        curves = empty if curves is None else pd.concat([curves, empty], ignore_index=True)
    return gr.update(value=curves,
                     color_map={n: PALETTE[i % len(PALETTE)] for i, n in enumerate(names)})


def build(app: Dashboard, tab: gr.Tab) -> None:
    form = spec_form()
    shown = gr.State(None)
    with gr.Row():
        with gr.Column(scale=2):
            with gr.Row():
                run_button = gr.Button("Run benchmark", variant="primary",
                                       interactive=not app.read_only, elem_id="bench-run")
                stop_button = gr.Button("Stop", variant="stop", interactive=not app.read_only,
                                        elem_id="bench-stop")
                quick_button = gr.Button("Quick setting", size="sm", elem_id="bench-quick")
            message = gr.Markdown(elem_id="bench-message")
            gr.Markdown("Every variant gets the same tokenized rows, seed, LoRA settings, "
                        "optimizer and padding; each runs in its own process.")
            inputs = form.render(initial=initial_values(app))
            mark_gpu_only(form, app)
        with gr.Column(scale=3):
            picked = gr.Dropdown(label="Benchmark", choices=[], allow_custom_value=True,
                                 elem_id="bench-run-picker")
            verdict = gr.Markdown(elem_id="bench-verdict")
            status = gr.Markdown(status_markdown(None, []), elem_id="bench-status")
            empty = result_views(None)
            table = gr.Dataframe(empty[0], label="Results (the verdict's numbers, per variant)",
                                 interactive=False, wrap=True, elem_id="bench-table",
                                 column_widths=benchmark_view.COLUMN_WIDTHS)
            with gr.Row():
                # Bars start at 0, or their lengths would exaggerate the differences.
                speed = gr.BarPlot(empty[1], x="variant", y="tokens/s", title="Tokens per second",
                                   y_lim=[0, None], height=240, y_axis_format="~s")
                memory = gr.BarPlot(empty[2], x="variant", y="peak VRAM GiB", y_lim=[0, None],
                                    title="Peak VRAM (GiB; empty on a CPU)", height=240)
            curves = gr.LinePlot(empty[3], x="step", y="loss", color="run",
                                 title="Loss per step, every variant", height=260,
                                 x_axis_format="d", elem_id="bench-curves")
            files = gr.File(label="Export (results.json, .md, .csv)", file_count="multiple",
                            interactive=False)
            with gr.Accordion("Report (results.md)", open=False):
                report = gr.Markdown()
    timer = gr.Timer(2.0)
    outputs = [status, table, speed, memory, curves, report, files, message, shown, verdict,
               picked]

    def choices(current=None):
        runs = app.runs(kind="benchmark")
        ids = [r["id"] for r in runs]
        value = current if current in ids else (ids[0] if ids else None)
        return gr.update(choices=views.run_choices(runs, kind="benchmark"), value=value)

    def start(*values):
        app.require_writable("run a benchmark")
        try:
            spec = check_spec_policy(form.validate(list(values)), app.settings)
            run = submit_benchmark(app.manager, spec, source="dashboard")
        except ModelForgeError as exc:
            return error_markdown(exc), gr.update()
        return f"Queued benchmark `{run['id']}`.", choices(run["id"])

    def stop(run_id):
        app.require_writable("stop a benchmark")
        if not run_id:
            return "No benchmark to stop."
        run = app.manager.stop(run_id)
        return f"Stop requested for `{run_id}` (now {run['status']})."

    def quick(*values):
        """The quick setting over the form's values: the model and data stay."""
        shown = [spec.to_display(QUICK[spec.name]) if spec.name in QUICK else value
                 for spec, value in zip(form.specs, values)]
        return *shown, f"**Quick setting** (a verdict in minutes, not tens of minutes). It gives " \
                       f"up: {QUICK_GIVES_UP}"

    run_button.click(start, inputs, [message, picked], api_name="run_benchmark")
    quick_button.click(quick, inputs, inputs + [message], api_name="benchmark_quick")
    stop_button.click(stop, picked, message, api_name="stop_benchmark")
    tab.select(choices, picked, picked, api_name="benchmark_runs")
    picked.change(lambda rid: refresh(app, rid, None), picked, outputs,
                  api_name="benchmark_results")
    timer.tick(lambda rid, key: refresh(app, rid, key), [picked, shown], outputs, api_name=False,
               show_progress="hidden")
