"""The Playground tab: a finished run's adapter against its base model, side by side and
streamed; and the export of a run as a merged 16-bit model (optionally converted to GGUF and
pushed to the Hub).

Generation and merging import torch, so they run in their own processes
(`python -m trainers.tools.playground`, `python -m trainers.tools.export`); this module reads their JSON
lines as they come.
"""

from __future__ import annotations

import json
from pathlib import Path

import gradio as gr

from modelforge_ui import views
from modelforge_ui.tabs.context import Dashboard
from modelforge_ui.tool_process import off_a_busy_gpu, stream_module
from trainers.runs.jobs import ADAPTER_STATUSES
from trainers.tools.gguf_export import GGUF_TYPES

NO_GGUF = "none"


def _failure(msg: dict) -> str:
    if msg.get("error_type"):
        return views.diagnosis_markdown(msg)
    return (f"**The process exited with code {msg.get('exit_code')}.**\n\n"
            f"```\n{msg.get('stderr_tail', '')}\n```")


def gpu_or_cpu(app: Dashboard) -> tuple[dict, str]:
    """The Playground's model, and an export, on the CPU while a job holds the GPU."""
    return off_a_busy_gpu(app.manager)


def generate(app: Dashboard, run_id: str | None, prompt: str, max_new_tokens: float,
             temperature: float):
    """Yield (adapter text, base text, status) as both models generate."""
    app.require_writable("generate")  # it loads a model: not for anonymous visitors
    run = app.get_run(run_id)
    if run is None:
        raise gr.Error("Pick a finished run first.")
    app.require_model_policy(run)
    request = json.dumps({"prompt": prompt, "max_new_tokens": int(max_new_tokens),
                          "temperature": float(temperature)})
    texts = {"adapter": "", "base": ""}
    env, where = gpu_or_cpu(app)
    yield "", "", f"Loading the model (its own process){where}..."
    for msg in stream_module("trainers.tools.playground", [run["run_dir"]], request, extra_env=env):
        if "text" in msg:
            texts[msg["model"]] += msg["text"]
            yield texts["adapter"], texts["base"], f"Generating with the {msg['model']} model..."
        elif msg.get("error_type") or msg.get("exit_code"):
            yield texts["adapter"], texts["base"], _failure(msg)
            return
    yield texts["adapter"], texts["base"], "Done."


def export(app: Dashboard, run_id: str | None, dtype: str, repo_id: str,
           gguf_type: str = NO_GGUF):
    """Yield (log, status) while merging (and converting to GGUF, and pushing)."""
    app.require_writable("export a model")
    run = app.get_run(run_id)
    if run is None:
        raise gr.Error("Pick a finished run first.")
    app.require_model_policy(run)
    args = [run["run_dir"], "--dtype", dtype]
    if repo_id.strip():
        args += ["--push-to-hub", repo_id.strip()]
    if gguf_type != NO_GGUF:
        args += ["--gguf", gguf_type]
    env, where = gpu_or_cpu(app)
    log: list[str] = [f"merging in its own process{where}"]
    for msg in stream_module("trainers.tools.export", args, extra_env=env):
        if "stage" in msg:
            log.append(msg["message"])
        elif msg.get("done"):
            where = f"`{msg['out_dir']}`" + (f", pushed to {msg['url']}" if msg.get("url") else "")
            if msg.get("gguf"):
                where += f"; **GGUF:** `{msg['gguf']}` (an Ollama Modelfile beside it)"
            yield "\n".join(log), f"**Merged model saved:** {where}"
            return
        elif msg.get("error_type") or msg.get("exit_code"):
            yield "\n".join(log), _failure(msg)
            return
        yield "\n".join(log), "Exporting..."


def unplayable_reason(app: Dashboard, run: dict) -> str | None:
    """Why the Playground would refuse this run's model under the server's rules, or None."""
    from modelforge_ui.security import check_run_model_policy
    from trainers.errors import ModelForgeError

    try:
        check_run_model_policy(run["config"], app.settings)
    except ModelForgeError as exc:
        return f"{exc.message} Fix: {exc.hint}" if exc.hint else exc.message
    return None


DEMO_NOTE = ("**These are a tiny demo model's answers** (a few million parameters, trained "
             "for minutes on the bundled examples, or not at all): odd and repetitive by "
             "nature. Look at how the fine-tuned answer differs from the base model's, not at "
             "its quality.")


def demo_model_note(run: dict | None) -> str:
    """DEMO_NOTE for a run trained on the demo model (its folder carries the demo's marker)."""
    model = str(((run or {}).get("config") or {}).get("model_name") or "")
    return DEMO_NOTE if model and (Path(model) / "MODELFORGE_DEMO.txt").is_file() else ""


def playable_choices(app: Dashboard) -> list[tuple[str, str]]:
    """The finished runs, newest first; one the Playground cannot load says so in its label
    (the reason shows when it is picked)."""
    runs = [r for r in app.runs(kind="train") if r["status"] in ADAPTER_STATUSES]
    return [(label + (" · NOT PLAYABLE here (pick it for the reason)"
                      if unplayable_reason(app, run) else ""), run_id)
            for (label, run_id), run in zip(views.run_choices(runs, ADAPTER_STATUSES), runs)]


def build(app: Dashboard, tab: gr.Tab) -> None:
    picked = gr.Dropdown(label="Run (finished)", choices=[], allow_custom_value=True,
                         elem_id="playground-run")
    prompt = gr.Textbox(label="Prompt", lines=4,
                        value="### Instruction:\nGive three tips for staying healthy.\n\n"
                              "### Response:\n")
    with gr.Row():
        max_new_tokens = gr.Slider(1, 512, value=64, step=1, label="max new tokens")
        temperature = gr.Slider(0, 2, value=0, step=0.05, label="temperature (0 = greedy)")
    generate_button = gr.Button("Generate with both", variant="primary",
                                interactive=not app.read_only)
    status = gr.Markdown()
    model_note = gr.Markdown(elem_id="playground-model-note")
    with gr.Row():
        adapter_out = gr.Textbox(label="Fine-tuned (base + adapter)", lines=10)
        base_out = gr.Textbox(label="Base model", lines=10)
    with gr.Accordion("Export: merge the adapter into a 16-bit model (and GGUF)", open=False):
        dtype = gr.Radio(["float16", "bfloat16"], value="float16", label="dtype")
        gguf_type = gr.Dropdown([NO_GGUF, *GGUF_TYPES], value=NO_GGUF, elem_id="export-gguf",
                                label="Also convert to GGUF (llama.cpp, Ollama, LM Studio)",
                                info="f16/bf16 keep the merged weights; q8_0 and the 4/5-bit "
                                     "types quantise them. Written to RUN_DIR/gguf/TYPE/ with "
                                     "an Ollama Modelfile.")
        repo_id = gr.Textbox(label="Push to the Hub as (optional, user/name)",
                             info="Needs HF_TOKEN in the server's environment and a network.")
        export_button = gr.Button("Merge and save", interactive=not app.read_only)
        export_status = gr.Markdown()
        export_log = gr.Textbox(label="Export log", lines=6)

    def choices():
        return gr.update(choices=playable_choices(app))

    def picked_note(run_id):
        run = app.get_run(run_id)
        reason = unplayable_reason(app, run) if run else None
        return f"**This run cannot be played here:** {reason}" if reason else ""

    picked.change(picked_note, picked, status, api_name=False)
    picked.change(lambda run_id: demo_model_note(app.get_run(run_id)), picked, model_note,
                  api_name=False)

    def run_generate(run_id, text, n_tokens, temp):
        yield from generate(app, run_id, text, n_tokens, temp)

    def run_export(run_id, kind, repo, gguf):
        yield from export(app, run_id, kind, repo, gguf)

    tab.select(choices, None, picked, api_name=False)
    generate_button.click(run_generate, [picked, prompt, max_new_tokens, temperature],
                          [adapter_out, base_out, status], api_name="generate")
    export_button.click(run_export, [picked, dtype, repo_id, gguf_type],
                        [export_log, export_status],
                        api_name="export_model")
