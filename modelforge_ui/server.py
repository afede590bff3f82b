"""The server: the REST API under /api, OpenAPI docs at /docs, the Gradio dashboard at /.

`create_app(settings)` builds the FastAPI app around one RunManager; `serve(settings)` runs it
with uvicorn. Settings refuse a non-loopback host without a token before anything listens.
Stopping the server does not stop training: workers run in their own processes, and the next
server on the same data directory re-attaches them (see trainers/runs/manager.py).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import sys
from pathlib import Path

from fastapi import FastAPI
from starlette.middleware import Middleware

from modelforge_ui.api import (MULTIPART_OVERHEAD, BodyLimitMiddleware, build_router,
                               install_error_handlers)
from modelforge_ui.api.docs import install_offline_docs, swagger_ui_dir
from modelforge_ui.http_guard import HttpGuard
from modelforge_ui.security import token_matches
from modelforge_ui.settings import Settings
from trainers.errors import ModelForgeError
from trainers.runs.manager import RunManager, server_using

DASHBOARD_MODULE = "modelforge_ui.dashboard"

API_DESCRIPTION = """Fine-tune LLMs with Hugging Face or Unsloth.

Start a run with `POST /api/start_training` (the body is the training config), follow it with
`GET /api/runs/{id}` and `GET /api/runs/{id}/events?after=N`, download the adapter from
`GET /api/runs/{id}/adapter`. With a token set, send `Authorization: Bearer <token>`.
"""


def create_app(settings: Settings, manager: RunManager | None = None) -> FastAPI:
    settings.make_dirs()
    if manager is None:
        manager = RunManager(settings.data_dir, jobs_per_device=settings.jobs_per_device,
                             worker_memory_bytes=settings.worker_memory_bytes)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        still = manager.shutdown(stop_running=False)
        if still:
            print(f"modelforge: {len(still)} run(s) keep training in their own processes "
                  f"({', '.join(still)}); the next server on {settings.data_dir} re-attaches "
                  "them.", file=sys.stderr, flush=True)

    offline_docs = swagger_ui_dir() is not None
    app = FastAPI(title="ModelForge", description=API_DESCRIPTION, version=_version(),
                  lifespan=lifespan, docs_url=None if offline_docs else "/docs",
                  redoc_url=None)
    install_offline_docs(app)  # /docs from the installed swagger-ui-bundle: works offline
    app.state.manager = manager
    app.state.settings = settings
    install_error_handlers(app)
    app.add_middleware(BodyLimitMiddleware,
                       upload_limit=settings.max_upload_bytes + MULTIPART_OVERHEAD)
    if settings.read_only:
        from modelforge_ui.read_only import install_read_only_guard

        install_read_only_guard(app)
    app.include_router(build_router(manager, settings))  # before the dashboard's catch-all "/"
    if settings.dashboard:
        mount_dashboard(app, manager, settings)
    # Added last, so it is the outermost layer: Host, Origin, token and content type are
    # checked before any other middleware or route reads the body.
    app.add_middleware(HttpGuard, settings=settings)
    return app


def mount_dashboard(app: FastAPI, manager: RunManager, settings: Settings) -> bool:
    """Mount the Gradio dashboard at "/" if modelforge_ui/dashboard.py exists.

    Its absence is reported, never hidden; an error inside it is raised, not swallowed.
    """
    if importlib.util.find_spec(DASHBOARD_MODULE) is None:
        print(f"modelforge: {DASHBOARD_MODULE} is not installed: serving the API only.",
              file=sys.stderr, flush=True)
        return False
    import gradio as gr

    module = importlib.import_module(DASHBOARD_MODULE)
    blocks = module.build_dashboard(manager, settings)
    auth = None
    if settings.token:
        def auth(username: str, password: str) -> bool:  # any user name; the token is the password
            return token_matches(password, settings.token)
    gr.mount_gradio_app(
        app, blocks, path="/", auth=auth, ssr_mode=False,
        auth_message="Log in with any user name and the server's token as the password.",
        max_file_size=settings.max_upload_bytes,
        allowed_paths=[str(settings.data_dir / "runs"), str(settings.uploads_dir)],
        theme=getattr(module, "THEME", None), css=getattr(module, "CSS", None),
        js=getattr(module, "JS", None))
    # Gradio checks that a FileData path a client sends was uploaded (is in its upload cache)
    # only once the Blocks "has_launched" (processing_utils._check_allowed), which launch() sets
    # and mount_gradio_app does not: without this, any handler opened any path it was sent.
    if not hasattr(blocks, "has_launched"):
        raise RuntimeError("This Gradio has no Blocks.has_launched: check how it now decides to "
                           "refuse FileData paths outside its upload cache before serving.")
    blocks.has_launched = True
    # Innermost (appended, not added on top), so the body it reads is already bounded by
    # BodyLimitMiddleware.
    app.user_middleware.append(Middleware(module.EventIndexGuard, blocks=blocks))
    if settings.token:
        app.add_middleware(module.LoginLimiter)
    return True


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("modelforge")
    except PackageNotFoundError:
        return "dev"


def port_in_use(host: str, port: int) -> str | None:
    """Why `host:port` cannot be listened on (the OS's words), or None when it is free. Checked
    before anything starts, so a busy port is one plain line, not uvicorn's traceback after the
    "serving" banner."""
    import errno
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return exc.strerror or str(exc)
            return None  # another problem (an unknown address): uvicorn reports it
    return None


def data_dir_owner(data_dir: Path) -> str | None:
    """The pid of another server using `data_dir`, or None."""
    return server_using(data_dir) if Path(data_dir).is_dir() else None


def serve(settings: Settings) -> int:
    """Run the server until it is stopped; the exit code for the command that started it
    (2 when it could not start, e.g. another server already uses the data directory)."""
    import uvicorn

    busy = port_in_use(settings.host, settings.port)
    owner = data_dir_owner(settings.data_dir)
    if owner:  # said first: a free port alone would lead into this wall
        where = f"http://{settings.host}:{settings.port}" if busy else "the address it printed"
        print(f"error: another ModelForge server (pid {owner}) already serves the data "
              f"directory {settings.data_dir}: open it at {where}, or start this one on "
              "another data directory with --data-dir DIR"
              + (f" and a free port (e.g. --port {settings.port + 1})" if busy else ""),
              file=sys.stderr)
        return 2
    if busy:
        print(f"error: port {settings.port} is in use on {settings.host} ({busy}): pass --port "
              f"with a free one (e.g. --port {settings.port + 1}), or stop what listens there",
              file=sys.stderr)
        return 2
    try:
        app = create_app(settings)
    except ModelForgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    recovered = app.state.manager.recovered
    for what, ids in recovered.items():
        if ids:
            print(f"modelforge: {what} at start: {', '.join(ids)}", file=sys.stderr, flush=True)
    where = f"http://{settings.host}:{settings.port}"
    print(f"modelforge: serving {where}  (API docs: {where}/docs; data: {settings.data_dir}; "
          f"token {'required' if settings.token else 'off: loopback only'})", flush=True)
    # uvicorn trusts X-Forwarded-For from 127.0.0.1 unless told: a local client (or a proxy
    # that passes the header on) could then pose as any address, e.g. to the login limiter.
    proxies = ",".join(settings.forwarded_allow_ips)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="info",
                proxy_headers=bool(proxies), forwarded_allow_ips=proxies or "")
    return 0


if __name__ == "__main__":
    serve(Settings.from_env())
