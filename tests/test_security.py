"""Security: the token, loopback by default, allowed roots, upload limits, trust_remote_code,
the dashboard login. Path rules are tested as functions and again over real HTTP."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import pytest

from live_server import LiveServer
from modelforge_ui.security import PathRefused, is_local_model_path, resolve_allowed_path
from modelforge_ui.settings import Settings, SettingsError
from trainers.tools.demo import SAMPLE_DIR, SAMPLE_SFT

TOKEN = "test-token-0123456789abcdef"


# --- path rules, as functions -------------------------------------------------------------------

@pytest.fixture
def roots(tmp_path):
    """An allowed root with a data file, a file outside it, and links from inside to outside."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    (root / "sub" / "ok.jsonl").write_text("{}\n")
    (outside / "secret.jsonl").write_text("{}\n")
    (root / "link.jsonl").symlink_to(outside / "secret.jsonl")
    (root / "linkdir").symlink_to(outside)
    (root / "inner_link.jsonl").symlink_to(root / "sub" / "ok.jsonl")
    return root, outside


def test_paths_inside_the_roots_resolve(roots):
    root, _ = roots
    ok = (root / "sub" / "ok.jsonl").resolve()
    assert resolve_allowed_path(str(root / "sub" / "ok.jsonl"), [root]) == ok
    assert resolve_allowed_path("sub/ok.jsonl", [root], base=root) == ok
    assert resolve_allowed_path(str(root / "inner_link.jsonl"), [root]) == ok  # link stays inside
    assert resolve_allowed_path(str(root), [root]) == root.resolve()


@pytest.mark.parametrize("path, words", [
    ("../outside/secret.jsonl", "contains '..'"),
    ("sub/../../outside/secret.jsonl", "contains '..'"),
    ("sub\\..\\..\\outside\\secret.jsonl", "contains '..'"),
    ("/etc/passwd", "outside the allowed roots"),
    ("~/data.jsonl", "starts with '~'"),
    ("", "not a usable path"),
    ("a\x00b.jsonl", "not a usable path"),
    ("link.jsonl", "symlink"),
    ("linkdir/secret.jsonl", "symlink"),
])
def test_paths_outside_the_roots_are_refused(roots, path, words):
    root, _ = roots
    with pytest.raises(PathRefused) as info:
        resolve_allowed_path(path, [root], base=root, field="dataset")
    assert words in info.value.message
    assert "--allowed-root" in info.value.hint
    assert info.value.to_dict()["problems"][0]["field"] == "dataset"


def test_outside_absolute_path_is_refused_even_if_it_exists(roots):
    root, outside = roots
    with pytest.raises(PathRefused, match="outside the allowed roots"):
        resolve_allowed_path(str(outside / "secret.jsonl"), [root])


def test_hub_ids_are_not_paths(tmp_path):
    assert not is_local_model_path("meta-llama/Llama-3.2-3B")
    assert not is_local_model_path("gpt2")
    for local in ("/models/llama", "./llama", "../llama", "a/b/c", "C:\\models\\x", "~/m"):
        assert is_local_model_path(local), local
    (tmp_path / "org" / "name").mkdir(parents=True)  # a hub-shaped name copied locally
    assert is_local_model_path("org/name", tmp_path)


# --- the policy, one set of functions for every kind of request -----------------------------------

def outside_values(tmp_path) -> dict[str, str]:
    """An existing local path of each kind outside the allowed roots."""
    (tmp_path / "elsewhere" / "model").mkdir(parents=True)
    (tmp_path / "elsewhere" / "data.jsonl").write_text('{"text": "hi"}\n')
    return {"file": str(tmp_path / "elsewhere" / "data.jsonl"),
            "model": str(tmp_path / "elsewhere" / "model"),
            "dir": str(tmp_path / "elsewhere" / "out")}


def requests_of_each_kind(demo_model) -> dict:
    """(schema, values that pass the policy, its check) for each kind of request."""
    from modelforge_ui.security import (check_config_policy, check_preview_policy,
                                        check_spec_policy)
    from trainers.benchmark.spec import BenchmarkSpec
    from trainers.config import TrainConfig
    from trainers.tools.preview import PreviewRequest

    return {
        TrainConfig: ({"model_name": str(demo_model), "dataset": str(SAMPLE_SFT)},
                      check_config_policy),
        BenchmarkSpec: ({"model": str(demo_model), "dataset": str(SAMPLE_SFT)},
                        check_spec_policy),
        PreviewRequest: ({"dataset": str(SAMPLE_SFT)}, check_preview_policy),
    }


def test_every_marked_path_field_is_held_to_the_roots(tmp_path, demo_model):
    from trainers.config import path_fields

    settings = Settings(data_dir=tmp_path / "data",
                        allowed_roots=(SAMPLE_DIR, demo_model))
    outside = outside_values(tmp_path)
    for schema, (values, check) in requests_of_each_kind(demo_model).items():
        assert check(schema(**values), settings)  # the starting values pass
        for field, kind in path_fields(schema).items():
            with pytest.raises(PathRefused) as info:
                check(schema(**{**values, field: outside[kind]}), settings)
            assert info.value.field == field, (schema.__name__, field)


def test_what_is_not_a_path_is_left_alone(tmp_path):
    from modelforge_ui.security import check_spec_policy
    from trainers.benchmark.spec import build_spec

    settings = Settings(data_dir=tmp_path / "data")
    spec = build_spec({"model": "llama-3.2-1b", "synthetic_weights": True, "dataset": "sample"})
    assert check_spec_policy(spec, settings) == spec  # an architecture and the bundled data
    hub = build_spec({"model": "meta-llama/Llama-3.2-1B", "dataset": "owner/data"})
    assert check_spec_policy(hub, settings) == hub


def test_trust_remote_code_is_one_rule_for_configs_previews_and_recorded_runs(tmp_path):
    from modelforge_ui.security import (NotPermittedError, check_config_policy,
                                        check_preview_policy, check_run_model_policy)
    from trainers.config import build_config
    from trainers.tools.preview import PreviewRequest

    strict = Settings(data_dir=tmp_path / "data", allowed_roots=(SAMPLE_DIR,))
    lenient = Settings(data_dir=tmp_path / "data", allowed_roots=(SAMPLE_DIR,),
                       allow_trust_remote_code=True)
    hub = "meta-llama/Llama-3.2-3B"
    cases = [(check_config_policy, build_config({"model_name": hub, "dataset": str(SAMPLE_SFT),
                                                 "trust_remote_code": True})),
             (check_preview_policy, PreviewRequest(dataset=str(SAMPLE_SFT), model_name=hub,
                                                   trust_remote_code=True)),
             (check_run_model_policy, {"model_name": hub, "trust_remote_code": True})]
    messages = set()
    for check, request in cases:
        with pytest.raises(NotPermittedError) as info:
            check(request, strict)
        messages.add((info.value.message, info.value.hint))
        check(request, lenient)
    assert len(messages) == 1 and "--allow-trust-remote-code" in messages.pop()[1]


# --- settings -------------------------------------------------------------------------------------

def test_listening_beyond_loopback_needs_a_token(tmp_path):
    assert Settings(data_dir=tmp_path).host == "127.0.0.1"
    for host in ("0.0.0.0", "192.168.1.5", "::", "example.com"):
        with pytest.raises(SettingsError, match="without a token"):
            Settings(host=host, data_dir=tmp_path)
        assert Settings(host=host, token=TOKEN, data_dir=tmp_path).host == host
    for host in ("127.0.0.1", "127.1.2.3", "::1", "localhost"):
        assert Settings(host=host, data_dir=tmp_path).host == host
    with pytest.raises(SettingsError, match="at least 16"):
        Settings(token="short", data_dir=tmp_path)
    assert TOKEN not in repr(Settings(token=TOKEN, data_dir=tmp_path))


def test_settings_from_env_and_flags(tmp_path):
    env = {"MODELFORGE_HOST": "0.0.0.0", "MODELFORGE_TOKEN": TOKEN, "MODELFORGE_PORT": "9001",
           "MODELFORGE_HOME": str(tmp_path), "MODELFORGE_ALLOWED_ROOTS": str(tmp_path),
           "MODELFORGE_MAX_UPLOAD_MB": "3", "MODELFORGE_ALLOW_TRUST_REMOTE_CODE": "yes"}
    s = Settings.from_env(env)
    assert (s.host, s.port, s.token, s.max_upload_bytes) == ("0.0.0.0", 9001, TOKEN, 3 * 2**20)
    assert s.allow_trust_remote_code and s.allowed_roots == (tmp_path,)
    assert Settings.from_env(env, port=9002).port == 9002  # a flag beats the environment
    with pytest.raises(SettingsError, match="MODELFORGE_PORT"):
        Settings.from_env({**env, "MODELFORGE_PORT": "eighty"})
    with pytest.raises(SettingsError, match="not an existing directory"):
        Settings.from_env(env, allowed_roots=(tmp_path / "nope",))


def test_cli_refuses_a_public_address_without_a_token(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "MODELFORGE_TOKEN"}
    out = subprocess.run([sys.executable, "-m", "modelforge_ui.cli", "run", "--host", "0.0.0.0",
                          "--data-dir", str(tmp_path), "--no-dashboard"],
                         capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 2
    assert "Refusing to listen on 0.0.0.0 without a token" in out.stderr
    assert "MODELFORGE_TOKEN" in out.stderr


# --- over HTTP --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def server(demo_model, tmp_path_factory):
    srv = LiveServer(tmp_path_factory.mktemp("sec") / "data", "--allowed-root", str(demo_model),
                     "--allowed-root", str(SAMPLE_DIR), "--max-upload-mb", "0.05",
                     token=TOKEN).start()
    yield srv
    srv.close()


ENDPOINTS = [("GET", "/api/health"), ("GET", "/api/runs"), ("GET", "/api/runs/x"),
             ("GET", "/api/runs/x/events"), ("POST", "/api/runs/x/stop"),
             ("DELETE", "/api/runs/x"), ("GET", "/api/runs/x/adapter"), ("GET", "/api/doctor"),
             ("POST", "/api/start_training"), ("POST", "/api/datasets"),
             ("GET", "/api/datasets"), ("POST", "/api/datasets/preview")]


@pytest.mark.parametrize("method, path", ENDPOINTS)
def test_every_api_call_needs_the_token(server, method, path):
    for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"},
                    {"Authorization": TOKEN}, {"Authorization": f"Basic {TOKEN}"}):
        response = httpx.request(method, server.url + path, headers=headers, timeout=30)
        assert response.status_code == 401, (headers, response.text)
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json()["error_type"] == "unauthorized"
    assert httpx.get(server.url + "/api/runs", params={"token": TOKEN}).status_code == 401


def test_the_right_token_is_accepted(server, tiny_config):
    with server.client() as client:
        assert client.get("/api/health").json()["auth_required"] is True
        check = client.post("/api/config/check", json=tiny_config())
        assert check.status_code == 200 and check.json()["ok"] is True


def refusal(client, config: dict, status: int = 403) -> dict:
    response = client.post("/api/start_training", json=config)
    assert response.status_code == status, response.text
    return response.json()


def test_paths_outside_the_roots_are_refused_over_http(server, tiny_config, tmp_path):
    outside = tmp_path / "outside.jsonl"
    outside.write_bytes(SAMPLE_SFT.read_bytes())
    link = server.data_dir / "datasets" / "link.jsonl"
    link.symlink_to(outside)
    with server.client() as client:
        cases = [("dataset", str(outside), "outside the allowed roots"),
                 ("dataset", "../../outside.jsonl", "contains '..'"),
                 ("dataset", "link.jsonl", "symlink"),
                 ("model_name", str(tmp_path), "outside the allowed roots"),
                 ("model_name", "./../../etc", "contains '..'"),
                 ("output_dir", str(tmp_path / "adapter"), "outside the allowed roots"),
                 ("output_dir", "../runs", "contains '..'")]
        for field, value, words in cases:
            body = refusal(client, tiny_config(**{field: value}))
            assert body["error_type"] == "path_not_allowed", body
            assert body["problems"][0]["field"] == field and words in body["message"], body
        preview = client.post("/api/datasets/preview", json={"dataset": str(outside)})
        assert preview.status_code == 403
        assert client.post("/api/datasets/preview", json={
            "dataset": str(SAMPLE_SFT), "model_name": str(tmp_path)}).status_code == 403
        missing = refusal(client, tiny_config(dataset="nothing-here.jsonl"), 422)
        assert "does not exist" in missing["problems"][0]["message"]
        assert client.get("/api/runs").json()["total"] == 0  # nothing was queued


def test_trust_remote_code_needs_the_operator(server, tiny_config, demo_model, tmp_path):
    with server.client() as client:
        body = refusal(client, tiny_config(trust_remote_code=True))
        assert body["error_type"] == "not_permitted"
        assert "--allow-trust-remote-code" in body["hint"]
        preview = client.post("/api/datasets/preview", json={
            "dataset": str(SAMPLE_SFT), "model_name": str(demo_model), "trust_remote_code": True})
        assert preview.status_code == 403
    allowing = LiveServer(tmp_path / "data", "--allowed-root", str(demo_model),
                          "--allowed-root", str(SAMPLE_DIR), "--allow-trust-remote-code").start()
    try:
        with allowing.client() as client:
            check = client.post("/api/config/check", json=tiny_config(trust_remote_code=True))
            assert check.json()["ok"] is True
    finally:
        allowing.close()


def test_upload_size_limit(server):
    with server.client() as client:
        small = client.post("/api/datasets", files={"file": ("s.jsonl", b'{"text": "hi"}\n')})
        assert small.status_code == 201
        big = b'{"text": "' + b"x" * 200_000 + b'"}\n'  # 0.05 MiB is the limit here
        response = client.post("/api/datasets", files={"file": ("big.jsonl", big)})
        assert response.status_code == 413, response.text
        assert response.json()["error_type"] == "too_large"
        names = {d["name"] for d in client.get("/api/datasets").json()["datasets"]}
        assert "big.jsonl" not in names
        assert not [p for p in (server.data_dir / "datasets").iterdir() if p.suffix == ".part"]


def test_dashboard_asks_for_a_login(demo_model, tmp_path):
    pytest.importorskip("modelforge_ui.dashboard")
    srv = LiveServer(tmp_path / "data", token=TOKEN, dashboard=True).start()
    try:
        with httpx.Client(base_url=srv.url, timeout=60) as browser:
            assert browser.get("/config").status_code == 401
            assert browser.get("/gradio_api/info").status_code == 401
            wrong = browser.post("/login", data={"username": "me", "password": "nope"})
            assert wrong.status_code >= 400
            assert browser.get("/config").status_code == 401
            assert browser.post("/login", data={"username": "me",
                                                "password": TOKEN}).status_code == 200
            assert browser.get("/config").status_code == 200
            assert browser.get("/api/health").status_code == 401  # a login is not the API token
    finally:
        srv.close()
