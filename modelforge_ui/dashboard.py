"""The Gradio dashboard: Training, Runs, Playground, Benchmark and Troubleshooting tabs.

`build_dashboard(manager, settings)` returns the Blocks that the server mounts at "/". Each tab
is a module in modelforge_ui/tabs; state lives in the run manager and its registry, not in the
UI. Importing this loads neither torch nor transformers: what needs them (a data preview's
tokenizer, generation, export) loads them only when the user asks, generation and export in
their own processes.

`LoginLimiter` slows down guessing the dashboard's password (the server's token).
"""

from __future__ import annotations

import collections
import contextlib
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
    the count. Each try is counted before it is checked, so a concurrent burst gets no more.

    The client address is the connection's, or what X-Forwarded-For says only when it comes
    from a proxy the operator named (--forwarded-allow-ips): a client cannot pose as others.
    Many addresses (a botnet, or one client with many IPv6 addresses) still meet GLOBAL_TRIES:
    at most that many unfinished or failed tries a minute from everyone together."""

    FREE_TRIES = 5
    MAX_WAIT_S = 60.0
    FORGET_S = 900.0  # failures this old no longer count
    MAX_CLIENTS = 10_000  # bounds the memory many addresses can take
    GLOBAL_TRIES = 30
    GLOBAL_WINDOW_S = 60.0

    def __init__(self, app, path: str = "/login"):
        self.app = app
        self.path = path
        self._tries: dict[str, tuple[int, float]] = {}  # client -> (failed tries, last try)
        self._recent: collections.deque[float] = collections.deque()  # every client's tries
        self._lock = threading.Lock()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or \
                scope["path"].rstrip("/") != self.path:
            return await self.app(scope, receive, send)
        client = (scope.get("client") or ("unknown",))[0]
        now = time.monotonic()
        wait = self.admit(client, now)
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
                with contextlib.suppress(ValueError):
                    self._recent.remove(now)

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
            while self._recent and now - self._recent[0] > self.GLOBAL_WINDOW_S:
                self._recent.popleft()
            if len(self._recent) >= self.GLOBAL_TRIES:
                return self._recent[0] + self.GLOBAL_WINDOW_S - now
            if len(self._tries) >= self.MAX_CLIENTS:
                self._tries = {c: t for c, t in self._tries.items()
                               if now - t[1] <= self.FORGET_S}
            if len(self._tries) >= self.MAX_CLIENTS:  # all recent: the longest quiet goes
                del self._tries[min(self._tries, key=lambda c: self._tries[c][1])]
            self._tries[client] = (count + 1, now)
            self._recent.append(now)
            return 0.0


async def _too_many(send, wait: float) -> None:
    seconds = math.ceil(wait)
    await _json_answer(send, 429, {"detail": f"Too many failed logins: try again in {seconds} s."},
                       [(b"retry-after", str(seconds).encode())])


class EventIndexGuard:
    """ASGI middleware for Gradio's POST /gradio_api/queue/join: a JSON 422 for an fn_index
    that names no event of the dashboard (Gradio looks it up unchecked: a KeyError, a plain-text
    500). The body it reads is bounded by BodyLimitMiddleware, which must wrap this one."""

    def __init__(self, app, blocks: gr.Blocks, path: str = "/gradio_api/queue/join"):
        self.app = app
        self.blocks = blocks
        self.path = path

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or \
                scope["path"].rstrip("/") != self.path:
            return await self.app(scope, receive, send)
        from modelforge_ui.api.errors import BodyTooLarge

        try:
            body = await _whole_body(receive)
        except BodyTooLarge as exc:
            return await _json_answer(send, 413, exc.body())
        index = _fn_index(body)
        if index is not None and index not in self.blocks.fns:
            return await _json_answer(send, 422, {
                "error_type": "invalid_request",
                "message": f"fn_index {str(index)[:30]} names no event of this dashboard.",
                "hint": "Use an fn_index from the dashboard's /config (its dependencies).",
                "problems": [{"field": "fn_index", "message": "names no event"}]})
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


async def _whole_body(receive) -> bytes:
    body, more = b"", True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False) and message["type"] == "http.request"
    return body


def _fn_index(body: bytes) -> object | None:
    """The body's fn_index when it is there but not a whole number Gradio can look up (the
    event's index, or the value itself for Gradio to judge); None to let Gradio answer."""
    try:
        data = json.loads(body)
    except ValueError:
        return None  # Gradio's own 422 names what is wrong
    if not isinstance(data, dict):
        return None
    value = data.get("fn_index")
    return value if isinstance(value, int) and not isinstance(value, bool) else repr(value)


async def _json_answer(send, status: int, content: dict, headers: list | None = None) -> None:
    body = json.dumps(content).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()), *(headers or [])]})
    await send({"type": "http.response.body", "body": body})
