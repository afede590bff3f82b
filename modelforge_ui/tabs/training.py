"""The Training tab: the generated form, presets, data preview, config import/export, the
equivalent CLI and curl commands, Start/Stop and live progress of the session's run."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import gradio as gr
import pandas as pd

from modelforge_ui import views
from modelforge_ui.api.errors import ApiError
from modelforge_ui.estimate_view import estimate_markdown, start_warning
from modelforge_ui.form import ConfigForm, problems_markdown
from modelforge_ui.log_view import clean_tail
from modelforge_ui.security import (check_config_policy, check_preview_policy,
                                    with_path_problems)
from modelforge_ui.tabs.context import Dashboard, error_markdown
from modelforge_ui.uploads import store_upload
from trainers.data import EXTENSIONS
from trainers.config import (COMMON_SEQ_LENGTHS, PRESETS, TrainConfig, config_to_text,
                             parse_config_text)
from trainers.errors import ConfigError, ModelForgeError
from trainers.runs.jobs import ACTIVE_STATUSES
from trainers.runs.preflight import preflight_problems
from trainers.runs.process import log_tail
from trainers.tools.preview import PreviewRequest, run_preview

DATA_TYPES = list(EXTENSIONS)  # the formats trainers.data reads
LOG_LINES = 16  # rows of the log box; the tail fills at most these (LOG_WIDTH characters a
LOG_WIDTH = 64  # row at 1400 px), so the box never scrolls and the newest line is in view


def build(app: Dashboard, demo: gr.Blocks) -> None:
    form = ConfigForm()
    run_id = gr.State(None)
    data_ui: dict = {}

    def data_extras() -> None:  # rendered inside the form's Data group
        data_ui["upload"] = gr.File(label="Upload a data set (.json, .jsonl, .csv, .parquet)",
                                    file_types=DATA_TYPES, type="filepath", height=120,
                                    elem_id="upload")
        data_ui["preview"] = gr.Button("Preview data", elem_id="preview-data")
        data_ui["info"] = gr.Markdown(elem_id="preview-info")
        data_ui["table"] = gr.Dataframe(label="Rendered examples", wrap=True, interactive=False,
                                        max_height=400, visible=False)

    with gr.Row():
        with gr.Column(scale=3):
            gr.Markdown("Presets set the LoRA, optimisation and advanced fields (and the ones "
                        "they name); your model and data stay.")
            with gr.Row():
                preset_buttons = {name: gr.Button(name, size="sm", elem_id=f"preset-{name}")
                                  for name in PRESETS}
            inputs = form.render({"data": data_extras}, demo_values(app.settings))
            seq_choice = gr.Radio(
                [str(n) for n in COMMON_SEQ_LENGTHS], label="Unsloth needs a fixed max sequence "
                "length: pick one", visible=False, elem_id="unsloth-seq")
            with gr.Accordion("Import / export the config", open=False):
                config_text = gr.Code(label="Config (JSON or YAML)", language="yaml",
                                      interactive=True, elem_id="config-text")
                with gr.Row():
                    import_button = gr.Button("Fill the form from this text")
                    export_json = gr.Button("Export as JSON")
                    export_yaml = gr.Button("Export as YAML")
                config_file = gr.File(label="Or import a config file (.json, .yaml)",
                                      file_types=[".json", ".yaml", ".yml"], type="filepath",
                                      height=120)
            commands = gr.Markdown(elem_id="commands")  # filled by Validate and Export
        with gr.Column(scale=2):
            with gr.Row():
                validate_button = gr.Button("Validate", elem_id="validate")
                start_button = gr.Button("Start", variant="primary", elem_id="start",
                                         interactive=not app.read_only)
                stop_button = gr.Button("Stop", variant="stop", elem_id="stop",
                                        interactive=False)  # until refresh shows an active run
            problems = gr.Markdown(elem_id="problems")
            status = gr.Markdown(views.progress_markdown(None), elem_id="run-status")
            # integer steps on x; short numbers on y (14k, not 14,000 cut to ",000" at 1400 px);
            # no value until a run has two points (see plot_value)
            axes = dict(x_axis_format="d", x_title="step", height=220)
            loss_plot = gr.LinePlot(None, x="step", y="loss", color="split",
                                    title="Loss (train, and eval with eval_split > 0)",
                                    y_title="loss", elem_id="loss-plot", **axes)
            speed_plot = gr.LinePlot(None, x="step", y="tokens/s",
                                     title="Tokens per second", y_title="tokens/s",
                                     y_axis_format="~s", elem_id="speed-plot", **axes)
            memory_plot = gr.LinePlot(None, x="step", y="memory (GiB)", y_title="GiB",
                                      title=MEMORY_TITLES["gpu_mem_allocated_gib"],
                                      y_axis_format=".2f", elem_id="memory-plot", **axes)
            log_box = gr.Textbox(label="Log tail (newest last; progress bars and library "
                                       "warnings left out: the Runs tab shows train.log whole)",
                                 lines=LOG_LINES, max_lines=LOG_LINES + 4, autoscroll=True,
                                 elem_id="log-tail")
    timer = gr.Timer(1.0)
    upload, preview_button = data_ui["upload"], data_ui["preview"]
    preview_info, preview_table = data_ui["info"], data_ui["table"]

    # -- the form ---------------------------------------------------------------------------
    for name, button in preset_buttons.items():
        button.click(_preset_handler(form, name), inputs, inputs + [problems],
                     api_name=f"preset_{name}")

    provider = form.component("provider")
    seq_input = form.component("max_seq_length")
    provider.change(_provider_changed, [provider, seq_input], [seq_choice, seq_input],
                    api_name="provider_changed")
    seq_choice.input(lambda value: int(value), seq_choice, seq_input, api_name=False)

    def validate(*values):
        try:
            cfg = checked_config(form, list(values), app.settings)
        except ModelForgeError as exc:
            return error_markdown(exc), gr.update(), ""
        late = preflight_problems(cfg, app.manager.devices)  # what Start / the worker refuse
        if late:
            return problems_markdown(late), config_to_text(cfg, "yaml"), ""
        return ("**The config is valid.**\n\n" + estimate_markdown(cfg),
                config_to_text(cfg, "yaml"), commands_markdown(cfg, app.settings))

    validate_button.click(validate, inputs, [problems, config_text, commands],
                          api_name="validate_config")

    def export(fmt):
        def handler(*values):
            try:
                cfg = form.validate(list(values))
            except ConfigError as exc:
                return problems_markdown(exc.problems), gr.update(), ""
            return "", config_to_text(cfg, fmt), commands_markdown(cfg, app.settings)
        return handler

    export_json.click(export("json"), inputs, [problems, config_text, commands],
                      api_name="export_json")
    export_yaml.click(export("yaml"), inputs, [problems, config_text, commands],
                      api_name="export_yaml")

    def import_text(text):
        try:
            data = parse_config_text(text or "")
        except ConfigError as exc:
            return [gr.update()] * len(inputs) + [problems_markdown(exc.problems)]
        return form.from_dict(data) + [_import_note(form, data)]

    import_button.click(import_text, config_text, inputs + [problems], api_name="import_config")
    config_file.upload(lambda path: Path(path).read_text(encoding="utf-8"), config_file,
                       config_text, api_name=False).then(
        import_text, config_text, inputs + [problems], api_name=False)

    # -- data ---------------------------------------------------------------------------------
    dataset_input = form.component("dataset")
    upload.upload(lambda path: _save_upload(app, path), upload, [dataset_input, problems],
                  api_name=False)
    preview_button.click(lambda *values: _preview(app, form, list(values)), inputs,
                         [preview_info, preview_table], api_name="preview_data")

    # -- running ------------------------------------------------------------------------------
    def start(*values):
        app.require_writable("start a run")
        *values, current = values
        try:
            cfg = checked_config(form, values, app.settings)
            run = app.manager.submit(cfg, source="dashboard")
        except ModelForgeError as exc:  # the page keeps following the run it had
            return current, error_markdown(exc), gr.update()
        return run["id"], f"Started run `{run['id']}`." + start_warning(cfg), \
            followed_markdown(app, run["id"])

    start_button.click(start, inputs + [run_id], [run_id, problems, status],
                       api_name="start_run")

    def stop(current):
        app.require_writable("stop a run")
        run, _ = followed_run(app, current)
        if run is None:
            return "No run to stop."
        if run["status"] not in ACTIVE_STATUSES:
            return f"No run to stop: `{run['id']}` has already {run['status']}."
        run = app.manager.stop(run["id"])
        return f"Stop requested for `{run['id']}` (now {run['status']}): it stops at the next " \
               "step and saves its adapter."

    stop_button.click(stop, run_id, problems, api_name="stop_run")

    # The timer's event is also the API's way to follow the session's run.
    outputs = [status, loss_plot, speed_plot, memory_plot, log_box, stop_button]
    timer.tick(lambda current: refresh(app, current), run_id, outputs, api_name="refresh_run",
               show_progress="hidden")
    demo.load(lambda: refresh(app, None), None, outputs, api_name=False)


def checked_config(form: ConfigForm, values: list, settings) -> TrainConfig:
    """The form's config under the server's rules, or ConfigError with every problem: the
    fields' and, beside them, the paths' (as /api/config/check reports them)."""
    try:
        cfg = form.validate(values)
    except ConfigError as exc:
        raise with_path_problems(exc, form.to_dict(values)[0], settings) from None
    return check_config_policy(cfg, settings)


SOURCES = {"cli": "the CLI", "api": "the REST API", "dashboard": "the dashboard"}


def followed_run(app: Dashboard, page_run_id: str | None) -> tuple[dict | None, str]:
    """The run the status follows, and a line that says which: the one this page started,
    else the active one (from anywhere); (None, "") when neither exists."""
    run = app.get_run(page_run_id)
    if run is not None:
        return run, "*The run this page started:*"
    run = app.get_run(app.active_run_id())
    if run is not None:
        source = SOURCES.get(run.get("source"), "elsewhere")
        return run, f"*No run started from this page; the active run, started from {source}:*"
    return None, ""


def followed_markdown(app: Dashboard, page_run_id: str | None) -> str:
    return status_markdown(app, *followed_run(app, page_run_id))


def status_markdown(app: Dashboard, run: dict | None, which: str) -> str:
    """The followed run's progress under the line that says which; without one, that none is
    active, naming the newest run so it is not taken for this page's."""
    if run is not None:
        return which + "\n\n" + views.progress_markdown(run)
    newest = app.runs(kind="train")
    if not newest:
        return views.progress_markdown(None)
    last = newest[0]
    source = SOURCES.get(last.get("source"), "elsewhere")
    return (f"No active run, and none started from this page. The newest run, `{last['id']}` "
            f"(**{last['status']}**, started from {source}), and the others are in the "
            "**Runs** tab. Fill the form and press **Start**.")


def refresh(app: Dashboard, page_run_id: str | None) -> tuple:
    """What the timer updates: status text, the three plots, the log tail and whether Stop
    has a run to act on."""
    run, which = followed_run(app, page_run_id)
    stop = gr.update(interactive=not app.read_only and run is not None
                     and run["status"] in ACTIVE_STATUSES)
    if run is None:
        return status_markdown(app, None, ""), None, None, None, "", stop
    events = app.manager.events(run["id"])
    frames = views.metric_frames(events)
    total = views.number((run.get("progress") or {}).get("total_steps"))
    return (status_markdown(app, run, which), plot_value(views.loss_curves(events), total),
            plot_value(frames["tokens_per_s"], total),
            memory_plot_value(frames, total),
            clean_tail(log_tail(Path(run["run_dir"]), 20000), LOG_LINES, width=LOG_WIDTH), stop)


def plot_value(frame: pd.DataFrame | None, total_steps) -> dict | None:
    """A live plot's update. Nothing until two points: a plot lays out its axes when first
    drawn and later only swaps the data, so one drawn empty or from a single point (a
    degenerate range, labels like 7.6015) clipped its labels and lost its axis titles at 1400
    px. The x range is the whole run (at least 10 steps), so the ticks are whole steps."""
    if frame is None or len(frame) < 2:
        return None
    last = int(frame["step"].max())
    return gr.update(value=frame, x_lim=[0, max(int(total_steps or 0), last, 10)])


MEMORY_TITLES = {"gpu_mem_allocated_gib": "GPU memory allocated (GiB)",
                 "process_rss_gib": "Memory: no GPU, so the worker's resident memory (GiB)"}


def memory_plot_value(frames: dict, total_steps) -> dict | None:
    """GPU memory allocated; a run without a GPU has none, so its worker's resident memory,
    titled so (as the Runs tab's comparison plots it)."""
    key = "gpu_mem_allocated_gib" if len(frames["gpu_mem_allocated_gib"]) else "process_rss_gib"
    value = plot_value(frames[key], total_steps)
    return value and {**value, "title": MEMORY_TITLES[key]}


def demo_values(settings) -> dict:
    """With --demo, the form starts on the offline demo model and the bundled sample data."""
    if not getattr(settings, "demo", False):
        return {}
    from trainers.tools.demo import demo_config

    keep = ("model_name", "dataset", "max_seq_length", "max_steps", "learning_rate", "lora_r",
            "lora_alpha")  # the demo run of docs/getting_started.md, whose loss drop it states
    config = demo_config(settings.demo_model_dir)
    return {k: config[k] for k in keep}


# --- the form's helpers -------------------------------------------------------------------------

def _preset_handler(form: ConfigForm, name: str):
    def apply(*values):
        return form.with_preset(name, list(values)) + [
            f"Preset **{name}** applied: "
            + ", ".join(f"{k} = {v}" for k, v in PRESETS[name].items())]
    apply.__name__ = f"preset_{name}"
    return apply


def _provider_changed(provider: str, seq_length):
    """Unsloth compiles for one sequence length: ask for a fixed common value."""
    if provider != "unsloth":
        return gr.update(visible=False), gr.update()
    seq = int(seq_length) if seq_length not in (None, -1) else 2048
    nearest = min(COMMON_SEQ_LENGTHS, key=lambda n: abs(n - seq))
    fixed = seq if seq in COMMON_SEQ_LENGTHS else nearest
    return gr.update(visible=True, value=str(fixed)), fixed


def _import_note(form: ConfigForm, data: dict) -> str:
    unknown = [k for k in data if k not in {s.name for s in form.specs}]
    if unknown:  # the form cannot hold them; say so instead of dropping them silently
        problems = [{"field": k, "message": "is not a config field and was not imported"}
                    for k in unknown]
        return problems_markdown(problems)
    return f"Imported {len(data)} fields; the rest show their defaults."


def commands_markdown(cfg: TrainConfig, settings) -> str:
    """The same job from the CLI and from the REST API."""
    data = cfg.model_dump(mode="json", exclude_defaults=True)
    body = json.dumps(data, indent=2)
    host = getattr(settings, "host", "127.0.0.1")
    host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    url = f"http://{host}:{getattr(settings, 'port', 8000)}/api/start_training"
    auth = ' -H "Authorization: Bearer $MODELFORGE_TOKEN"' \
        if getattr(settings, "token", None) else ""
    curl = (f"curl -X POST {url}{auth} \\\n  -H 'Content-Type: application/json' \\\n"
            f"  -d {shlex.quote(json.dumps(data))}")
    return ("**Same job from the CLI** (save the fields below as `config.json`):\n\n"
            f"```json\n{body}\n```\n\n```shell\nmodelforge train config.json\n```\n\n"
            f"**Same job through the REST API:**\n\n```shell\n{curl}\n```")


# --- data ---------------------------------------------------------------------------------------

def _save_upload(app: Dashboard, path: str | None):
    """Store an upload as the API does (safe unique name, size limit) and point `dataset` at it."""
    if not path:
        return gr.update(), ""
    app.require_writable("upload a data set")
    try:
        with open(path, "rb") as source:
            dest = store_upload(source, Path(path).name, app.settings)
    except ApiError as exc:
        return gr.update(), f"**{exc.message}**\n\nFix: {exc.hint}"
    return str(dest), f"Uploaded to `{dest}`. Press **Preview data** to check it."


def _preview(app: Dashboard, form: ConfigForm, values: list):
    """Detected format, rendered examples and token lengths of the form's data set, computed
    in a subprocess under the same request model and path rules as the API's preview."""
    raw, _ = form.to_dict(values)
    if not raw.get("dataset"):
        return ("**dataset** is required: upload a file or type a path first.",
                gr.update(visible=False))
    note = ""
    try:
        request = check_preview_policy(PreviewRequest.from_config(raw), app.settings)
        try:
            result = run_preview(request)
        except ModelForgeError as exc:
            if not request.model_name:
                raise
            note = (f"Token-length statistics unavailable: {exc.message} "
                    f"Fix: {exc.hint or 'check model_name.'}")
            result = run_preview(request.model_copy(update={"model_name": ""}))
    except ModelForgeError as exc:
        return error_markdown(exc), gr.update(visible=False)
    if "token_stats" in result:
        note = _token_stats_markdown(result["token_stats"])
    elif not note:
        note = "Token-length statistics need the model's tokenizer: fill in **model_name**."
    info = (f"**Format:** {result['format']} · **rows:** {result['num_rows']} · **examples:** "
            f"{result['num_examples']} · **columns:** {', '.join(result['columns'])}\n\n{note}")
    frame = preview_frame(result["examples"])
    return info, gr.update(value=frame, visible=True, column_widths=preview_widths(frame))


PREVIEW_CELL_CHARS = 600  # longer texts are cut in the table (the run trains on all of it)


def preview_frame(examples: list[dict]) -> pd.DataFrame:
    """The rendered examples with every column in view (prompt and completion side by side,
    the source line narrow), each cell cut to PREVIEW_CELL_CHARS."""
    frame = pd.DataFrame(examples)

    def cut(value):
        text = value if isinstance(value, str) else json.dumps(value, default=str) \
            if isinstance(value, (list, dict)) else value
        if isinstance(text, str) and len(text) > PREVIEW_CELL_CHARS:
            return text[:PREVIEW_CELL_CHARS] + f"... ({len(text):,} characters)"
        return text

    return frame.map(cut)


def preview_widths(frame: pd.DataFrame) -> list[str]:
    """A narrow line column; the text columns share the rest, so none is pushed off-screen."""
    text = [c for c in frame.columns if c != "line"]
    share = f"{(100 - 8 * ('line' in frame.columns)) / max(1, len(text)):.0f}%"
    return ["8%" if c == "line" else share for c in frame.columns]


def _token_stats_markdown(stats: dict) -> str:
    cells = " | ".join(str(stats.get(k, "-")) for k in ("count", "min", "median", "p95", "max",
                                                       "truncated"))
    return ("**Token lengths** (tokens per example, with the model's tokenizer):\n\n"
            "| examples | min | median | p95 | max | longer than max_seq_length |\n"
            f"|---|---|---|---|---|---|\n| {cells} |")
