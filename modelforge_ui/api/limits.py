"""Request size: a JSON body is a few KiB, an upload is capped by the operator's
--max-upload-mb, a dashboard event (Gradio's queue/join and the like) a few MiB. Over the limit
is a 413, before the body is read past it (and before Gradio checks a login)."""

from __future__ import annotations

from fastapi.responses import JSONResponse

from modelforge_ui.api.datasets import UPLOAD_PATH
from modelforge_ui.api.errors import BodyTooLarge

MAX_JSON_BYTES = 1 * 2**20  # a config is a few KiB; anything near this is not a config
MAX_DASHBOARD_BYTES = 8 * 2**20  # a dashboard event carries the form's values; files upload
MULTIPART_OVERHEAD = 64 * 2**10
GRADIO_UPLOAD_PATH = "/gradio_api/upload"


class BodyLimitMiddleware:
    """413 (as JSON) for a request whose body is over its endpoint's limit: at once when
    Content-Length says so, else as soon as the streamed bytes pass it. Nothing is buffered
    beyond the limit. (FastAPI's own max_body_size answers in plain text.)"""

    def __init__(self, app, upload_limit: int):
        self.app = app
        self.upload_limit = upload_limit

    def limit(self, path: str) -> int:
        path = path.rstrip("/")
        if path in (UPLOAD_PATH, GRADIO_UPLOAD_PATH):
            return self.upload_limit
        return MAX_JSON_BYTES if path.startswith("/api/") else MAX_DASHBOARD_BYTES

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.limit(scope["path"])
        declared = dict(scope["headers"]).get(b"content-length", b"").decode() or None
        if declared is not None and declared.isdigit() and int(declared) > limit:
            error = BodyTooLarge(limit)
            return await JSONResponse(error.body(), 413)(scope, receive, send)
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)  # handled by the HTTPException handler
            return message

        await self.app(scope, limited_receive, send)
