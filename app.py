"""Entry point for Hugging Face Spaces and Docker: `python app.py`.

It builds the same server as `modelforge run` (REST API under /api, dashboard at /). Where it
listens:
  - on a Space (SPACE_ID set): 0.0.0.0:7860, or GRADIO_SERVER_NAME / GRADIO_SERVER_PORT;
  - elsewhere: GRADIO_SERVER_NAME / GRADIO_SERVER_PORT when set, else MODELFORGE_HOST /
    MODELFORGE_PORT, else 127.0.0.1:8000.
A Space, or listening beyond loopback, needs MODELFORGE_TOKEN (set it as a Space secret) to
train; without one the server runs in read-only demo mode and says so on every page and refused
call, whatever address it listens on (a Space may bind 127.0.0.1 behind a proxy of its own). On
a Space the offline demo model and the bundled sample data are set up (MODELFORGE_DEMO=1 does it
anywhere), and X-Forwarded-For from the private networks (where the Space's proxy sits) names
the client, unless MODELFORGE_FORWARDED_ALLOW_IPS says otherwise.
"""

from __future__ import annotations

import os
import sys
from typing import Mapping

from modelforge_ui.settings import Settings, SettingsError, is_loopback
from trainers.errors import ModelForgeError

TRUE = ("1", "true", "yes", "on")
# The Space's proxy connects from a private address; a client's own X-Forwarded-For entries sit
# left of the one it appends, so uvicorn (which reads from the right) skips them.
SPACE_PROXIES = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")


def settings_from_env(env: Mapping[str, str]) -> Settings:
    """The server settings for this environment (see the module docstring)."""
    on_space = bool(env.get("SPACE_ID"))
    host = env.get("GRADIO_SERVER_NAME") or ("0.0.0.0" if on_space else None)
    port_text = env.get("GRADIO_SERVER_PORT") or ("7860" if on_space else None)
    try:
        port = int(port_text) if port_text else None
    except ValueError:
        raise SettingsError(f"GRADIO_SERVER_PORT={port_text!r} is not a whole number.",
                            "Set it to e.g. 7860.") from None
    listen_on = host or env.get("MODELFORGE_HOST") or "127.0.0.1"
    read_only = not env.get("MODELFORGE_TOKEN") and (on_space or not is_loopback(listen_on))
    demo = on_space or env.get("MODELFORGE_DEMO", "").lower() in TRUE
    proxies = SPACE_PROXIES if on_space and not env.get("MODELFORGE_FORWARDED_ALLOW_IPS") \
        else None
    return Settings.from_env(env, host=host, port=port, read_only=read_only or None,
                             demo=demo or None, forwarded_allow_ips=proxies)


def main() -> int:
    from modelforge_ui.cli_commands import ensure_demo_model

    try:
        settings = settings_from_env(os.environ)
        if settings.demo:
            ensure_demo_model(settings.demo_model_dir)
    except ModelForgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if settings.read_only:
        print(f"modelforge: READ-ONLY DEMO MODE on {settings.host}:{settings.port}: no "
              "MODELFORGE_TOKEN is set, so nothing can be started, changed or deleted. Set "
              "MODELFORGE_TOKEN (a Space secret) to enable training.", file=sys.stderr, flush=True)
    from modelforge_ui.server import serve

    return serve(settings)


if __name__ == "__main__":
    sys.exit(main())
