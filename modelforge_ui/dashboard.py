"""The Gradio dashboard: Training, Runs, Playground, Benchmark and Troubleshooting tabs.

`build_dashboard(manager, settings)` returns the Blocks that the server mounts at "/". Each tab
is a module in modelforge_ui/tabs; state lives in the run manager and its registry, not in the
UI. Importing this loads neither torch nor transformers: what needs them (a data preview's
tokenizer, generation, export) loads them only when the user asks, generation and export in
their own processes.

`LoginLimiter` slows down guessing the dashboard's password (the server's token).
"""

from __future__ import annotations

import json
import math
import threading
import time

import gradio as gr

from modelforge_ui.tabs import playground, runs, training, troubleshooting
from modelforge_ui.tabs.context import READ_ONLY_NOTE, Dashboard

TITLE = "ModelForge"
# A command block wraps its long lines (a curl line was cut off at 1400 px) and keeps its text
# clear of the copy button in its top-right corner. server.py passes CSS to Gradio.
CSS = (
    "#commands pre { padding-right: 2.5rem; }"
    " #commands pre code { white-space: pre-wrap; overflow-wrap: anywhere; }")
# A Gradio text box's accessible name is its label and its whole info text (a number box gets
# aria-label = its label): each form text box is named by its label alone, as it (re)mounts.
JS = """() => {
  const name = () => document.querySelectorAll('[id^="cfg-"] input[type="text"], [id^="cfg-"]'
      + ' textarea').forEach(box => {
    const label = box.closest('label')?.querySelector('[data-testid="block-info"]');
    const text = label?.textContent.trim();
    if (text && box.getAttribute('aria-label') !== text) box.setAttribute('aria-label', text);
  });
  new MutationObserver(name).observe(document.body, {childList: true, subtree: true});
  name();
}"""


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


class LoginLimiter:
    """ASGI middleware for Gradio's POST /login: after FREE_TRIES failed logins from one client
    address, that address waits 1 s before its next try, then 2, 4, ... up to MAX_WAIT_S; a try
    in the wait is answered 429 with Retry-After, its password unchecked. A good login clears
    the count. Each try is counted before it is checked, so a concurrent burst gets no more."""

    FREE_TRIES = 5
    MAX_WAIT_S = 60.0
    FORGET_S = 900.0  # failures this old no longer count
    MAX_CLIENTS = 10_000  # bounds the memory many addresses can take

    def __init__(self, app, path: str = "/login"):
        self.app = app
        self.path = path
        self._tries: dict[str, tuple[int, float]] = {}  # client -> (failed tries, last try)
        self._lock = threading.Lock()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or \
                scope["path"].rstrip("/") != self.path:
            return await self.app(scope, receive, send)
        client = (scope.get("client") or ("unknown",))[0]
        wait = self.admit(client, time.monotonic())
        if wait > 0:
            return await _too_many(send, wait)
        status = {}

        async def watch(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        await self.app(scope, receive, watch)
        if status.get("code") == 200:
            with self._lock:
                self._tries.pop(client, None)

    def admit(self, client: str, now: float) -> float:
        """0 and count the try as failed until it succeeds, or the seconds left to wait."""
        with self._lock:
            count, last = self._tries.get(client, (0, now))
            if now - last > self.FORGET_S:
                count = 0
            if count >= self.FREE_TRIES:
                doubling = min(count - self.FREE_TRIES, 16)  # 2**16 s is past MAX_WAIT_S
                wait = last + min(2.0 ** doubling, self.MAX_WAIT_S) - now
                if wait > 0:
                    return wait
            if len(self._tries) >= self.MAX_CLIENTS:
                self._tries = {c: t for c, t in self._tries.items()
                               if now - t[1] <= self.FORGET_S}
            self._tries[client] = (count + 1, now)
            return 0.0


async def _too_many(send, wait: float) -> None:
    seconds = math.ceil(wait)
    body = json.dumps({"detail": f"Too many failed logins: try again in {seconds} s."}).encode()
    await send({"type": "http.response.start", "status": 429,
                "headers": [(b"content-type", b"application/json"),
                            (b"retry-after", str(seconds).encode()),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
