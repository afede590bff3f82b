"""Request size: a JSON body is a few KiB, an upload is capped by the operator's
--max-upload-mb. Over the limit is a JSON 413, before the body is read past it."""

from __future__ import annotations

from fastapi.responses import JSONResponse

from modelforge_ui.api.datasets import UPLOAD_PATH
from modelforge_ui.api.errors import BodyTooLarge

MAX_JSON_BYTES = 1 * 2**20  # a config is a few KiB; anything near this is not a config
MULTIPART_OVERHEAD = 64 * 2**10


class BodyLimitMiddleware:
    """413 (as JSON) for an /api request whose body is over its endpoint's limit: at once when
    Content-Length says so, else as soon as the streamed bytes pass it. Nothing is buffered
    beyond the limit. (FastAPI's own max_body_size answers in plain text.)"""

    def __init__(self, app, upload_limit: int):
        self.app = app
        self.upload_limit = upload_limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope["path"].startswith("/api/"):
            return await self.app(scope, receive, send)
        limit = self.upload_limit if scope["path"].rstrip("/") == UPLOAD_PATH \
            else MAX_JSON_BYTES
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
