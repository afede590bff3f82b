"""The HTTP layer against browser-borne and hostile requests, over real HTTP to `modelforge run`:
Host and Origin checks (DNS rebinding, cross-site requests), JSON content type, the token
before any body, size caps, JSON 404/405 under /api, overlong names and paths, a full disk."""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path

import httpx
import pytest

from live_server import LiveServer
from modelforge_ui.settings import Settings
from trainers.config import build_config
from trainers.tools.demo import SAMPLE_DIR, SAMPLE_SFT
from trainers.runs.registry import RunRegistry


TOKEN = "guard-token-0123456789abcdef"
SPACE_HOST = "someone-modelforge.hf.space"
PROXY_HOST = "proxy.example.org"
EVIL = "evil.example"


@pytest.fixture(scope="module")
def server(demo_model, tmp_path_factory):
    """The default server: tokenless on loopback, dashboard included, as on a Space's host
    and behind a reverse proxy (both names allowed through the environment)."""
    srv = LiveServer(tmp_path_factory.mktemp("guard") / "data", "--allowed-root",
                     str(demo_model), "--allowed-root", str(SAMPLE_DIR), dashboard=True,
                     env={"SPACE_HOST": SPACE_HOST, "MODELFORGE_ALLOWED_HOSTS": PROXY_HOST})
    yield srv.start()
    srv.close()


@pytest.fixture(scope="module")
def token_server(tmp_path_factory):
    srv = LiveServer(tmp_path_factory.mktemp("guard-token") / "data", token=TOKEN)
    yield srv.start()
    srv.close()


@pytest.fixture
def client(server):
    with server.client() as c:
        yield c


def assert_error(response: httpx.Response, status: int, error_type: str) -> dict:
    assert response.status_code == status, (response.status_code, response.text[:300])
    body = response.json()
    assert body["error_type"] == error_type and body["message"] and body["hint"], body
    return body


def run_count(client: httpx.Client) -> int:
    return client.get("/api/runs").json()["total"]


# --- Host: DNS rebinding -------------------------------------------------------------------------

DASHBOARD_AND_API = ["/", "/config", "/gradio_api/info", "/api/runs", "/api/health", "/docs"]


@pytest.mark.parametrize("path", DASHBOARD_AND_API)
def test_a_foreign_host_header_is_refused_everywhere(client, server, path):
    for host in (EVIL, f"{EVIL}:{server.port}", f"127.0.0.1.{EVIL}", f"localhost.{EVIL}"):
        body = assert_error(client.get(path, headers={"Host": host}), 400, "bad_host")
        assert "--allowed-host" in body["hint"]


@pytest.mark.parametrize("path", DASHBOARD_AND_API)
def test_the_servers_own_names_are_served(client, server, path):
    for host in (f"127.0.0.1:{server.port}", f"localhost:{server.port}", f"[::1]:{server.port}",
                 "localhost:9999",  # an ssh tunnel or a published container port renumbers
                 SPACE_HOST, PROXY_HOST, f"{PROXY_HOST}:443"):
        response = client.get(path, headers={"Host": host})
        assert response.status_code == 200, (host, response.status_code, response.text[:200])


# --- Origin: cross-site requests ------------------------------------------------------------------

def foreign_page_requests(client: httpx.Client, origin: str) -> dict[str, httpx.Response]:
    headers = {"Origin": origin}
    upload = {"file": ("x.jsonl", b'{"text": "hi"}\n')}
    return {
        "GET /api/runs": client.get("/api/runs", headers=headers),
        # Gradio's CORS would let any page read these when Host is not localhost or 127.0.0.1
        "GET /config": client.get("/config", headers={**headers, "Host": "[::1]"}),
        "GET /gradio_api/info": client.get("/gradio_api/info", headers={**headers,
                                                                        "Host": SPACE_HOST}),
        "start_training": client.post("/api/start_training", json={"model_name": "x"},
                                      headers=headers),
        "datasets": client.post("/api/datasets", files=upload, headers=headers),
        "stop": client.post("/api/runs/x/stop", headers=headers),
        "delete": client.delete("/api/runs/x", headers=headers),
        "queue/join": client.post("/gradio_api/queue/join", json={"fn_index": 0, "data": [],
                                                                  "session_hash": "abc"},
                                  headers=headers),
        "upload": client.post("/gradio_api/upload", files=upload, headers=headers),
        "login": client.post("/login", data={"username": "a", "password": "b"}, headers=headers),
    }


@pytest.mark.parametrize("origin", [f"http://{EVIL}", "null", "http://localhost:3000",
                                    "http://127.0.0.1:1", f"https://{SPACE_HOST}.{EVIL}"])
def test_requests_from_a_foreign_origin_are_refused(client, server, origin):
    before = run_count(client)
    uploads = set((server.data_dir / "datasets").iterdir())
    for what, response in foreign_page_requests(client, origin).items():
        body = assert_error(response, 403, "bad_origin")
        assert origin in body["message"], (what, body)
        assert "access-control-allow-origin" not in response.headers, what
    assert run_count(client) == before
    assert set((server.data_dir / "datasets").iterdir()) == uploads


def test_the_servers_own_origin_and_no_origin_are_fine(client, server, tiny_config):
    for headers in ({}, {"Origin": server.url}, {"Origin": f"http://localhost:{server.port}",
                                                 "Host": f"localhost:{server.port}"},
                    {"Origin": f"https://{SPACE_HOST}", "Host": SPACE_HOST},
                    {"Origin": f"https://{PROXY_HOST}"}):  # a proxy that rewrites Host
        check = client.post("/api/config/check", json=tiny_config(), headers=headers)
        assert check.status_code == 200 and check.json()["ok"] is True, (headers, check.text)
        assert client.get("/config", headers=headers).status_code == 200
        upload = client.post("/gradio_api/upload", headers=headers,
                             files={"files": ("x.jsonl", b'{"text": "hi"}\n')})
        assert upload.status_code == 200, (headers, upload.text)


# --- JSON endpoints take JSON ------------------------------------------------------------------------

@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x", "text/json"])
def test_json_endpoints_refuse_other_content_types(client, tiny_config, content_type):
    body = json.dumps(tiny_config())
    before = run_count(client)
    for method, path in (("POST", "/api/start_training"), ("POST", "/api/config/check"),
                         ("POST", "/api/datasets/preview"), ("PATCH", "/api/runs/x")):
        response = client.request(method, path, content=body,
                                  headers={"Content-Type": content_type})
        error = assert_error(response, 415, "unsupported_media_type")
        assert "application/json" in error["hint"], error
    assert run_count(client) == before


def test_json_with_a_charset_is_json(client, tiny_config):
    response = client.post("/api/config/check", content=json.dumps(tiny_config()),
                           headers={"Content-Type": "application/json; charset=utf-8"})
    assert response.status_code == 200 and response.json()["ok"] is True, response.text


# --- unknown endpoints and methods ---------------------------------------------------------------

def test_unknown_api_paths_and_methods_get_the_json_error(client):
    for path in ("/api/nothing", "/api/runs/x/nothing", "/api/runs/", "/api"):
        body = assert_error(client.get(path), 404, "not_found")
        assert "/docs" in body["hint"]
    for method, path, allowed in (("GET", "/api/start_training", "POST"),
                                  ("PUT", "/api/runs", "GET"), ("DELETE", "/api/health", "GET"),
                                  ("POST", "/api/runs/x", "DELETE, GET, PATCH")):
        response = client.request(method, path)
        body = assert_error(response, 405, "method_not_allowed")
        assert response.headers["allow"] == allowed and allowed in body["hint"], body


# --- the token before the body, size caps before spooling ------------------------------------------

def first_line(port: int, head: str, body: bytes = b"", timeout: float = 10) -> str:
    """Send a request whose body is (much) shorter than its Content-Length; return the status
    line, which must come without the server waiting for the rest of the body."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
        data = b""
        try:
            while b"\r\n" not in data and (chunk := sock.recv(4096)):
                data += chunk
        except socket.timeout:
            raise AssertionError(f"no answer within {timeout} s: the server waits for the body")
    return data.split(b"\r\n")[0].decode()


def head(method: str, path: str, port: int, length: int, extra: str = "") -> str:
    return (f"{method} {path} HTTP/1.1\nHost: 127.0.0.1:{port}\nContent-Length: {length}\n"
            f"{extra}")


def test_the_token_is_checked_before_any_body_is_read(token_server):
    port, big = token_server.port, 500 * 2**20  # under the 512 MiB default upload limit
    multipart = "Content-Type: multipart/form-data; boundary=b\n"
    part = b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.jsonl"\r\n\r\n'
    for auth in ("", "Authorization: Bearer wrong-token-0123456789\n"):
        line = first_line(port, head("POST", "/api/datasets", port, big, multipart + auth),
                          part + b"x" * 65536)
        assert " 401 " in line, line
        line = first_line(port, head("POST", "/api/start_training", port, 2**19,
                                     "Content-Type: application/json\n" + auth), b'{"a": ')
        assert " 401 " in line, line
    assert httpx.get(token_server.url + "/api/runs").status_code == 401


def test_sizes_are_capped_before_the_body_is_read(token_server):
    port, auth = token_server.port, f"Authorization: Bearer {TOKEN}\n"
    multipart = "Content-Type: multipart/form-data; boundary=b\n"
    line = first_line(port, head("POST", "/api/datasets", port, 600 * 2**20, multipart + auth))
    assert " 413 " in line, line
    line = first_line(port, head("POST", "/api/start_training", port, 2 * 2**20,
                                 "Content-Type: application/json\n" + auth))
    assert " 413 " in line, line


# --- names and paths the file system cannot take ------------------------------------------------

def test_an_overlong_upload_name_is_shortened(client, server):
    name = "a" * 300 + ".jsonl"
    response = client.post("/api/datasets", files={"file": (name, SAMPLE_SFT.read_bytes())})
    assert response.status_code == 201, response.text
    stored = Path(response.json()["path"])
    assert stored.suffix == ".jsonl" and len(stored.name) <= 255 and stored.parent.name == "datasets"
    assert stored.read_bytes() == SAMPLE_SFT.read_bytes()
    again = client.post("/api/datasets", files={"file": (name, b'{"text": "x"}\n')})
    assert again.status_code == 201 and again.json()["path"] != str(stored)


@pytest.mark.parametrize("field, value", [
    ("model_name", "a" * 100_000), ("dataset", "a" * 100_000 + ".jsonl"),
    ("model_name", "/" + "m" * 300), ("dataset", "d/" * 3000 + "x.jsonl"),
    ("output_dir", "o" * 100_000)])
def test_an_overlong_path_is_refused_naming_the_field(client, tiny_config, field, value):
    before = run_count(client)
    body = assert_error(client.post("/api/start_training", json=tiny_config(**{field: value})),
                        403, "path_not_allowed")
    assert body["problems"][0]["field"] == field and "too long" in body["message"], body
    assert len(body["message"]) < 1000  # the value is not echoed back
    check = client.post("/api/config/check", json=tiny_config(**{field: value})).json()
    assert check["ok"] is False and check["problems"][0]["field"] == field
    if field != "output_dir":
        preview = client.post("/api/datasets/preview", json={
            "dataset": str(SAMPLE_SFT), **{field: value}})
        assert_error(preview, 403, "path_not_allowed")
    assert run_count(client) == before


# --- a damaged events file ----------------------------------------------------------------------------

def test_events_whose_type_is_not_a_string_do_not_break_the_api(client, server, tiny_config):
    registry = RunRegistry(server.data_dir)
    run = registry.create(build_config(tiny_config()), source="test")
    registry.set_status(run["id"], "failed", {"error_type": "data", "message": "m", "hint": "h"})
    lines = [{"type": "started", "time": 1}, {"type": ["progress"]}, {"type": {"a": 1}},
             {"type": 5}, {"type": None}, {"time": 2}, {"type": "progress", "step": 1}]
    (Path(run["run_dir"]) / "events.jsonl").write_text("".join(json.dumps(line) + "\n"
                                                              for line in lines))
    detail = client.get(f"/api/runs/{run['id']}")
    assert detail.status_code == 200, detail.text[:300]
    assert detail.json()["progress"]["step"] == 1
    events = client.get(f"/api/runs/{run['id']}/events")
    assert events.status_code == 200, events.text[:300]
    types = [e["type"] for e in events.json()["events"]]
    assert all(isinstance(t, str) for t in types) and "started" in types, types


# --- the operator's --allowed-host flag ------------------------------------------------------------

def test_the_allowed_host_flag(tmp_path):
    assert Settings.from_env({"MODELFORGE_ALLOWED_HOSTS": "a.example, B.example:8443",
                              "SPACE_HOST": "x-y.hf.space,custom.example"},
                             data_dir=tmp_path).allowed_hosts == \
        ("a.example", "b.example", "x-y.hf.space", "custom.example")
    srv = LiveServer(tmp_path / "data", "--allowed-host", PROXY_HOST).start()
    try:
        with srv.client() as client:
            assert client.get("/api/runs", headers={"Host": PROXY_HOST}).status_code == 200
            assert client.get("/api/runs", headers={"Host": EVIL}).status_code == 400
            stop = client.post("/api/runs/x/stop", headers={"Origin": f"https://{PROXY_HOST}"})
            assert_error(stop, 404, "not_found")
    finally:
        srv.close()


# --- a full disk ------------------------------------------------------------------------------------

def mount_tmpfs(path: Path, size: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                         capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {out.stderr.strip()}")


def test_a_full_disk_on_upload_is_a_507_and_leaves_no_partial_file(tmp_path):
    """The upload folder on a 1 MiB tmpfs (the copy into it fails), then the temp folder the
    multipart parser spools to on a 4 MiB one (the spooling fails)."""
    data_dir, spool = tmp_path / "data", tmp_path / "spool"
    uploads = data_dir / "datasets"
    mounted = []
    try:
        for path, size in ((uploads, "1m"), (spool, "4m")):
            mount_tmpfs(path, size)
            mounted.append(path)
        srv = LiveServer(data_dir, env={"TMPDIR": str(spool)}).start()
        try:
            with srv.client() as client:
                for size in (2 * 2**20, 6 * 2**20):
                    big = b'{"text": "' + b"x" * size + b'"}\n'
                    response = client.post("/api/datasets", files={"file": ("big.jsonl", big)})
                    body = assert_error(response, 507, "disk_full")
                    assert "space" in body["message"].lower(), body
                    assert list(uploads.iterdir()) == [] and list(spool.iterdir()) == []
                small = client.post("/api/datasets", files={"file": ("s.jsonl", b'{"a": 1}\n')})
                assert small.status_code == 201, small.text
            assert "Traceback" not in srv.log()
        finally:
            srv.close()
    finally:
        for path in reversed(mounted):
            subprocess.run(["umount", str(path)], check=False)
