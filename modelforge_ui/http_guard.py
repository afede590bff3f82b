"""The first layer every request meets, dashboard included: one pure-ASGI middleware, so each
refusal comes before anything reads the body.

- Host must name this server, else 400: a loopback name, an IP address, the --host it listens
  on, or one of Settings.allowed_hosts (SPACE_HOST, --allowed-host). DNS rebinding points a
  foreign name at 127.0.0.1, and that name stays in Host; an IP address cannot be rebound.
  X-Forwarded-Host is held to the same rule: Gradio builds the page's root URL from it.
- A request that carries an Origin must come from this server's own origin (the host:port of
  its Host header) or an allowed host, else 403. A page elsewhere can send forms, text/plain and
  multipart POSTs with no CORS preflight, and Gradio's CORS headers let any page read the
  dashboard's answers when Host is not localhost/127.0.0.1 (a Space, an IP, [::1]). Browsers
  send Origin on every such request (and on no same-origin GET); curl and scripts send none.
- Under /api, with a token: a missing or wrong bearer token is 401.
- Under /api, a body in any type but application/json is 415 (uploads are multipart).
Refused requests get the API's JSON error body.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.responses import JSONResponse

from modelforge_ui.api import UPLOAD_PATH, ApiError
from modelforge_ui.security import token_matches
from modelforge_ui.settings import Settings, host_name

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
WILDCARDS = ("", "0.0.0.0", "::")  # listening everywhere names no host


def is_api(path: str) -> bool:
    return path == "/api" or path.startswith("/api/")


def is_json(content_type: str) -> bool:
    media = content_type.split(";")[0].strip().lower()
    return media == "application/json" or (media.startswith("application/")
                                           and media.endswith("+json"))


def is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


class HttpGuard:
    def __init__(self, app, settings: Settings):
        self.app = app
        self.settings = settings
        self.names = {"localhost", *settings.allowed_hosts}
        if host_name(settings.host) not in WILDCARDS:
            self.names.add(host_name(settings.host))

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        refusal = self.refusal(scope)
        if refusal is None:
            return await self.app(scope, receive, send)
        if scope["type"] == "websocket":  # closing before accepting answers 403
            return await send({"type": "websocket.close", "code": 1008})
        response = JSONResponse(refusal.body(), refusal.status, refusal.headers)
        await response(scope, receive, send)

    def refusal(self, scope) -> ApiError | None:
        headers = Headers(scope=scope)
        host = headers.get("host", "")
        names = [("Host", host)] + [("X-Forwarded-Host", name.strip()) for name in
                                    headers.get("x-forwarded-host", "").split(",") if name]
        for header, name in names:
            if not self.own_name(host_name(name)):
                return ApiError(400, "bad_host", f"This server does not answer to the name "
                                                 f"{name[:100]!r} (the request's {header} "
                                                 "header).",
                                "Open it by its own address, e.g. http://127.0.0.1:"
                                f"{self.settings.port}; behind a reverse proxy, start it with "
                                "--allowed-host NAME (MODELFORGE_ALLOWED_HOSTS).")
        origin = headers.get("origin")
        if origin is not None and not self.own_origin(origin, host):
            return ApiError(403, "bad_origin", f"Refused a request from the page at "
                                               f"{origin[:100]!r}: it is not this server's.",
                            "Use the dashboard on this server, or call the API from a script "
                            "(which sends no Origin header); a reverse proxy's name is added "
                            "with --allowed-host NAME.")
        if scope["type"] != "http" or not is_api(scope["path"]):
            return None
        if self.settings.token:
            scheme, _, given = headers.get("authorization", "").partition(" ")
            given = given.strip() if scheme.lower() == "bearer" else ""
            if not token_matches(given or None, self.settings.token):
                return ApiError(401, "unauthorized",
                                "Missing or wrong token." if given else
                                "This server needs a token.",
                                "Send the header `Authorization: Bearer <token>` with the token "
                                "the server was started with (MODELFORGE_TOKEN).",
                                headers={"WWW-Authenticate": "Bearer"})
        content_type = headers.get("content-type")
        if scope["method"] not in SAFE_METHODS and content_type is not None and \
                not is_json(content_type) and scope["path"].rstrip("/") != UPLOAD_PATH:
            return ApiError(415, "unsupported_media_type",
                            f"The request body is {content_type[:100]!r}; this endpoint reads "
                            "JSON.", "Send the body as JSON with the header "
                                     "`Content-Type: application/json`.")
        return None

    def own_name(self, name: str) -> bool:
        return name in self.names or is_ip(name)

    def own_origin(self, origin: str, host: str) -> bool:
        netloc = urlsplit(origin).netloc.lower() if "://" in origin else ""  # "null" has none
        return bool(netloc) and (netloc == host.lower()
                                 or host_name(netloc) in self.settings.allowed_hosts)
