"""The Benchmark tab (built against trainers.benchmark)."""

from __future__ import annotations

import gradio as gr


def build(app, tab: gr.Tab) -> None:
    gr.Markdown("The benchmark tab is being built.")
