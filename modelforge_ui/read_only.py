"""Read-only demo mode: the REST API answers reads and refuses every change.

A public deployment without a token (app.py on a Space with no MODELFORGE_TOKEN, or beyond
loopback) runs in this mode. The dashboard disables its buttons and refuses in its handlers;
this guard does the same for /api, so no route can be forgotten, and for the routes through
which Gradio stores a client's files.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
# These read and compute but change nothing.
ALLOWED_WRITES = {("POST", "/api/config/check"), ("POST", "/api/config/estimate"),
                  ("POST", "/api/datasets/preview")}
# Gradio's own routes that write a client's files into its cache.
GRADIO_WRITES = ("/gradio_api/upload", "/gradio_api/process_recording")

REFUSAL = {
    "error_type": "read_only",
    "message": "This server runs in read-only demo mode: it shows runs, checks configs and "
               "previews data, but starts, stops, uploads and deletes nothing.",
    "hint": "The operator sets MODELFORGE_TOKEN (a Space secret) and restarts the server; then "
            "send `Authorization: Bearer <token>`.",
}


def refuses(method: str, path: str) -> bool:
    path = path.rstrip("/")
    if method in SAFE_METHODS:
        return False
    return path in GRADIO_WRITES or \
        (path.startswith("/api/") and (method, path) not in ALLOWED_WRITES)


def install_read_only_guard(app: FastAPI) -> None:
    @app.middleware("http")
    async def read_only_guard(request: Request, call_next):
        if refuses(request.method, request.url.path):
            return JSONResponse(REFUSAL, status_code=403)
        return await call_next(request)
