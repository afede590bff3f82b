"""app.py (Spaces and Docker): where it binds, and the token-or-read-only rule, on a real server."""

from __future__ import annotations

import httpx
import pytest
from gradio_client import Client

from app import settings_from_env
from modelforge_ui.read_only import refuses
from ui_server import free_port, running_server

TOKEN = "t" * 24


def test_on_a_space_it_binds_everywhere_on_7860_and_is_read_only_without_a_token(tmp_path):
    env = {"SPACE_ID": "someone/modelforge", "MODELFORGE_HOME": str(tmp_path)}
    settings = settings_from_env(env)
    assert (settings.host, settings.port) == ("0.0.0.0", 7860)
    assert settings.read_only and settings.demo
    with_token = settings_from_env({**env, "MODELFORGE_TOKEN": TOKEN})
    assert not with_token.read_only and with_token.token == TOKEN


def test_gradio_variables_pick_the_address_and_loopback_needs_no_token(tmp_path):
    env = {"GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": "9123",
           "MODELFORGE_HOME": str(tmp_path)}
    settings = settings_from_env(env)
    assert (settings.host, settings.port, settings.read_only, settings.demo) == \
        ("127.0.0.1", 9123, False, False)
    with pytest.raises(Exception, match="GRADIO_SERVER_PORT='x' is not a whole number"):
        settings_from_env({**env, "GRADIO_SERVER_PORT": "x"})


def test_read_only_guard_lets_reads_and_checks_through():
    assert not refuses("GET", "/api/runs") and not refuses("POST", "/api/config/check")
    assert refuses("POST", "/api/start_training") and refuses("DELETE", "/api/runs/x")
    assert not refuses("POST", "/gradio_api/queue/join")  # the dashboard refuses by itself


def app_env(tmp_path, port: int, **extra) -> dict:
    return {"GRADIO_SERVER_NAME": "0.0.0.0", "GRADIO_SERVER_PORT": str(port),
            "MODELFORGE_HOME": str(tmp_path / "data"), "MODELFORGE_TOKEN": "", "SPACE_ID": "",
            "MODELFORGE_DEMO": "", **extra}


def test_without_a_token_the_app_is_a_read_only_demo_that_says_so(tmp_path):
    port = free_port()
    with running_server(["app.py"], tmp_path / "app.log", app_env(tmp_path, port),
                        port=port) as url:
        refused = httpx.post(f"{url}/api/start_training", json={"model_name": "x"})
        assert refused.status_code == 403 and refused.json()["error_type"] == "read_only"
        assert "MODELFORGE_TOKEN" in refused.json()["hint"]
        assert httpx.post(f"{url}/api/config/check", json={}).status_code == 200
        assert httpx.get(f"{url}/api/runs").status_code == 200
        assert "read-only demo mode" in httpx.get(f"{url}/config").text
        client = Client(url + "/", verbose=False)
        with pytest.raises(Exception, match="read-only demo mode"):
            client.predict(None, api_name="/stop_run")
    assert "READ-ONLY DEMO MODE" in (tmp_path / "app.log").read_text()


def test_with_a_token_the_app_requires_it_everywhere(tmp_path):
    port = free_port()
    env = app_env(tmp_path, port, MODELFORGE_TOKEN=TOKEN)
    with running_server(["app.py"], tmp_path / "app.log", env, port=port) as url:
        assert httpx.get(f"{url}/api/runs").status_code == 401
        auth = {"Authorization": f"Bearer {TOKEN}"}
        assert httpx.get(f"{url}/api/runs", headers=auth).status_code == 200
        with pytest.raises(Exception):
            Client(url + "/", verbose=False)  # the dashboard asks for a login
        client = Client(url + "/", auth=("anyone", TOKEN), verbose=False)
        assert client.predict(None, api_name="/stop_run") == "No run to stop."
