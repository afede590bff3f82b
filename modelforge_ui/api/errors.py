"""The API's error responses: every error is JSON {"error_type", "message", "hint"} (plus
"problems": [{"field", "message"}] for field-level errors), with the same texts the CLI
prints. Bad input gets a 4xx, never a 500; an unknown /api path or method a JSON 404/405.
"""

from __future__ import annotations

import errno
import sqlite3

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from trainers.config import plain_problem
from trainers.errors import ModelForgeError

DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)

# The status of each typed error (trainers.errors and its kin); any other is a 400.
STATUS_OF = {"config": 422, "data": 422, "path_not_allowed": 403, "not_permitted": 403,
             "timeout": 504, "preview_crashed": 502, "conflict": 409, "no_adapter": 404,
             "not_resumable": 409, "compare": 422, "not_found": 404}


class ApiError(Exception):
    """An error response: status, a stable error_type, a plain message and the fix."""

    def __init__(self, status: int, error_type: str, message: str, hint: str = "",
                 problems: list[dict] | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.error_type, self.message, self.hint = status, error_type, message, hint
        self.problems, self.headers = problems, headers

    def body(self) -> dict:
        body = {"error_type": self.error_type, "message": self.message, "hint": self.hint}
        if self.problems is not None:
            body["problems"] = self.problems
        return body


def not_found(run_id: str) -> ApiError:
    return ApiError(404, "not_found", f"No run with id {run_id!r}.",
                    "List the runs with GET /api/runs.")


def _no_endpoint(method: str, path: str) -> ApiError:
    return ApiError(404, "not_found", f"No such endpoint: {method} {path[:200]}.",
                    "See the API's endpoints at /docs.")


def _wrong_method(method: str, path: str, allowed: str) -> ApiError:
    return ApiError(405, "method_not_allowed", f"{method} is not allowed on {path[:200]}.",
                    f"Use {allowed or 'another method'}; see the API's endpoints at /docs.",
                    headers={"Allow": allowed} if allowed else None)


def disk_full(exc: BaseException | None) -> ApiError | None:
    """The 507 for an OSError that means the disk (or the quota) is full, or SQLite's own
    SQLITE_FULL (not an OSError), else None."""
    if isinstance(exc, OSError) and exc.errno in DISK_FULL:
        reason = exc.strerror
    elif isinstance(exc, sqlite3.OperationalError) and "full" in str(exc):
        reason = f"run database: {exc}"
    else:
        return None
    return ApiError(507, "disk_full", f"The server ran out of disk space ({reason}).",
                    "Free space on the server (the data directory, and the temp folder that "
                    "uploads pass through), or ask the operator to; then try again.")


class BodyTooLarge(StarletteHTTPException):
    def __init__(self, limit: int):
        super().__init__(413, "Content Too Large")
        self.limit = limit

    def body(self) -> dict:
        return {"error_type": "too_large",
                "message": f"The request body is larger than this endpoint's limit of "
                           f"{self.limit} bytes.",
                "hint": "Upload big data sets with POST /api/datasets (the operator sets its "
                        "limit with --max-upload-mb); a config is a few KiB."}


def _error_response(status: int, body: dict, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers=headers)


def _plain_problem(err: dict) -> dict:
    """One FastAPI/pydantic validation error in the words trainers.config uses."""
    problem = plain_problem(err, where="the request")
    return {**problem, "field": problem["field"] if problem["field"] != "config" else "body"}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        return _error_response(exc.status, exc.body(), exc.headers)

    @app.exception_handler(ModelForgeError)
    async def modelforge_error(request: Request, exc: ModelForgeError):
        return _error_response(STATUS_OF.get(exc.error_type, 400), exc.to_dict())

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        problems = [_plain_problem(e) for e in exc.errors()]
        if any(e.get("type") == "json_invalid" for e in exc.errors()):
            return _error_response(400, {"error_type": "bad_json", "message":
                                         "Malformed JSON: " + problems[0]["message"],
                                         "hint": "Send one valid JSON object.",
                                         "problems": problems})
        lines = "; ".join(f"{p['field']}: {p['message']}" for p in problems)
        return _error_response(422, {"error_type": "invalid_request",
                                     "message": f"Invalid request: {lines}",
                                     "hint": "See the endpoint's schema at /docs.",
                                     "problems": problems})

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        headers = getattr(exc, "headers", None)
        known = disk_full(exc.__cause__)  # FastAPI's 400 for a multipart body it could not spool
        if known is None and exc.status_code == 404:
            known = _no_endpoint(request.method, request.url.path)
        elif known is None and exc.status_code == 405:
            known = _wrong_method(request.method, request.url.path, (headers or {}).get("Allow"))
        if known is not None:
            return _error_response(known.status, known.body(), known.headers)
        body = exc.body() if isinstance(exc, BodyTooLarge) else \
            {"error_type": "http", "message": str(exc.detail), "hint": ""}
        return _error_response(exc.status_code, body, headers)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception):
        if (full := disk_full(exc)) is not None:
            return _error_response(full.status, full.body())
        return _error_response(500, {
            "error_type": "internal", "message": f"{type(exc).__name__}: {str(exc)[:500]}",
            "hint": "This is a bug in ModelForge: please report it with the server log."})


def add_fallback_routes(router: APIRouter) -> None:
    """The JSON 404 for an unknown /api path and the 405 for a wrong method on a known one
    (without these the dashboard, mounted at "/", answers them in Gradio's words). Add it
    last: it takes every /api path the routes before it do not."""
    known = [route for route in router.routes if isinstance(route, APIRoute)]
    methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"]

    @router.api_route("", methods=methods, include_in_schema=False)
    @router.api_route("/{path:path}", methods=methods, include_in_schema=False)
    def no_such_endpoint(request: Request):
        path = request.scope["path"]
        allowed = sorted({method for route in known if route.path_regex.match(path)
                          for method in route.methods})
        if allowed:
            raise _wrong_method(request.method, path, ", ".join(allowed))
        raise _no_endpoint(request.method, path)
