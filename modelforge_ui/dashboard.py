"""The Gradio dashboard: Training, Runs, Playground, Benchmark and Troubleshooting tabs.

`build_dashboard(manager, settings)` returns the Blocks that the server mounts at "/". Each tab
is a module in modelforge_ui/tabs; state lives in the run manager and its registry, not in the
UI. Importing this loads neither torch nor transformers: what needs them (a data preview's
tokenizer, generation, export) loads them only when the user asks, generation and export in
their own processes.
"""

from __future__ import annotations

import gradio as gr

from modelforge_ui.tabs import playground, runs, training, troubleshooting
from modelforge_ui.tabs.context import READ_ONLY_NOTE, Dashboard

TITLE = "ModelForge"


def build_dashboard(manager, settings) -> gr.Blocks:
    app = Dashboard(manager, settings)
    with gr.Blocks(title=TITLE, analytics_enabled=False) as demo:
        gr.Markdown(f"# {TITLE}\nFine-tune language models with LoRA on Hugging Face or "
                    "Unsloth; watch the run; compare providers.")
        if app.read_only:
            gr.Markdown(READ_ONLY_NOTE, elem_id="read-only-note")
        with gr.Tabs():
            with gr.Tab("Training", id="training"):
                training.build(app, demo)
            with gr.Tab("Runs", id="runs") as tab:
                runs.build(app, tab)
            with gr.Tab("Playground", id="playground") as tab:
                playground.build(app, tab)
            with gr.Tab("Benchmark", id="benchmark") as tab:
                _benchmark(app, tab)
            with gr.Tab("Troubleshooting", id="troubleshooting") as tab:
                troubleshooting.build(app, tab)
    return demo


def _benchmark(app: Dashboard, tab: gr.Tab) -> None:
    from modelforge_ui.tabs import benchmark

    benchmark.build(app, tab)
