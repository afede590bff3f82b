"""/docs without a network: Swagger UI's script and style come from the installed
`swagger-ui-bundle-v2` package (Swagger UI 5, which reads FastAPI's OpenAPI 3.1; the older
`swagger-ui-bundle` ships Swagger UI 4, which refuses it), served under /docs-assets, instead of
FastAPI's default CDN (a blank page offline). ReDoc (CDN-only) is not served.
"""

from __future__ import annotations

import sys
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.staticfiles import StaticFiles

ASSETS = "/docs-assets"


def swagger_ui_dir() -> Path | None:
    """Where the installed swagger-ui-bundle-v2 keeps swagger-ui-bundle.js, or None."""
    try:
        from swagger_ui_bundle import swagger_ui_path
    except ImportError:
        return None
    path = Path(swagger_ui_path)
    return path if (path / "swagger-ui-bundle.js").is_file() else None


def install_offline_docs(app: FastAPI, docs_url: str = "/docs") -> bool:
    """Serve /docs from local files; False (and a line on stderr) when the package is missing,
    then /docs loads Swagger UI from its CDN as FastAPI does by default."""
    assets = swagger_ui_dir()
    if assets is None:
        print("modelforge: swagger-ui-bundle-v2 is not installed: /docs needs a network "
              "(pip install swagger-ui-bundle-v2)", file=sys.stderr, flush=True)
        return False
    app.mount(ASSETS, StaticFiles(directory=assets), name="docs-assets")
    redirect = f"{docs_url}/oauth2-redirect"

    @app.get(docs_url, include_in_schema=False)
    def swagger_ui():
        return get_swagger_ui_html(
            openapi_url=app.openapi_url, title=f"{app.title} - API docs",
            oauth2_redirect_url=redirect, swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon-32x32.png")

    @app.get(redirect, include_in_schema=False)
    def swagger_ui_redirect():
        return get_swagger_ui_oauth2_redirect_html()

    return True
