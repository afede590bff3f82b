"""Resources per request and who a client is (issue 29), over real HTTP to real servers:
expensive requests bounded (429 + Retry-After), data sets refused by their size before they are
decoded, the helper's memory capped, zips that never follow a linked adapter folder or leave
files behind, proxy headers trusted from named proxies only, the login limiter's global cap,
Gradio's routes bounded, read-only decided by "a Space without a token", and the last 500s."""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from live_server import LiveServer
from test_http_guard import assert_error, first_line, head
from trainers.runs.registry import RunRegistry
from trainers.tools.demo import SAMPLE_DIR, SAMPLE_SFT
from ui_server import free_port, running_server

pytestmark = pytest.mark.slow

TOKEN = "limits-token-0123456789abcdef"
MARKER = f"secret-{uuid.uuid4().hex}"
MAX_ROWS = 1000  # the limited server's MODELFORGE_DATA_MAX_ROWS
MAX_MB = 4  # and MODELFORGE_DATA_MAX_MB


# --- the servers ---------------------------------------------------------------------------------

def finished_run(registry: RunRegistry, adapter_files: dict[str, str]) -> tuple[str, Path]:
    """A succeeded run (never trained: its files are written here) and its run directory."""
    run = registry.create(None, source="test", config_dict={"model_name": "m", "dataset": "d"})
    run_dir = Path(run["run_dir"])
    (run_dir / "events.jsonl").write_text(json.dumps({"type": "finished"}) + "\n")
    if adapter_files:
        (run_dir / "adapter").mkdir()
        for name, text in adapter_files.items():
            (run_dir / "adapter" / name).write_text(text)
    registry.set_status(run["id"], "succeeded", {"adapter_dir": str(run_dir / "adapter")})
    return run["id"], run_dir


@pytest.fixture(scope="module")
def limited(demo_model, tmp_path_factory):
    """An API server allowing one expensive request of each kind at once and small data sets,
    with a data root for the tests' files and finished runs written before it starts."""
    base = tmp_path_factory.mktemp("limits")
    data_root, outside = base / "data-root", base / "outside"
    data_root.mkdir()
    outside.mkdir()
    (outside / "adapter_config.json").write_text("{}")
    (outside / "secret.txt").write_text(MARKER)
    registry = RunRegistry(base / "data")
    runs = {"good": finished_run(registry, {"adapter_config.json": "{}", "w.bin": "x"})[0]}
    linked_id, linked_dir = finished_run(registry, {})
    (linked_dir / "adapter").symlink_to(outside, target_is_directory=True)
    runs["linked"] = linked_id
    runs["doomed"] = [finished_run(registry, {})[0] for _ in range(30)]
    srv = LiveServer(base / "data", "--allowed-root", str(demo_model), "--allowed-root",
                     str(SAMPLE_DIR), "--allowed-root", str(data_root),
                     "--concurrent-per-kind", "1",
                     env={"MODELFORGE_DATA_MAX_ROWS": str(MAX_ROWS),
                          "MODELFORGE_DATA_MAX_MB": str(MAX_MB)})
    srv.start()
    srv.data_root, srv.runs = data_root, runs
    yield srv
    srv.close()


@pytest.fixture
def client(limited):
    with limited.client() as c:
        yield c


# --- item 1: expensive requests are bounded ------------------------------------------------------

def test_previews_past_the_limit_get_429_with_retry_after(limited):
    def preview(_):
        return httpx.post(f"{limited.url}/api/datasets/preview",
                          json={"dataset": str(SAMPLE_SFT)}, timeout=120)

    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(preview, range(4)))
    statuses = sorted(a.status_code for a in answers)
    assert 200 in statuses and 429 in statuses and set(statuses) <= {200, 429}, statuses
    busy = next(a for a in answers if a.status_code == 429)
    assert_error(busy, 429, "busy")
    assert int(busy.headers["Retry-After"]) > 0
    assert "--concurrent-per-kind" in busy.json()["hint"]


def write_parquet(path: Path, rows: int, text: str) -> Path:
    """`rows` rows of the same text, dictionary-encoded: a few KB on disk whatever it decodes to."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    column = pa.DictionaryArray.from_arrays(pa.array([0] * rows, pa.int32()), pa.array([text]))
    pq.write_table(pa.table({"text": column}), path, compression="zstd")
    return path


@pytest.mark.parametrize("name, limit_variable", [
    ("rows.parquet", "MODELFORGE_DATA_MAX_ROWS"),
    ("decoded.parquet", "MODELFORGE_DATA_MAX_MB"),
    ("wide.csv", "MODELFORGE_DATA_MAX_COLUMNS"),
    ("rows.jsonl", "MODELFORGE_DATA_MAX_ROWS"),
])
def test_a_data_set_past_a_limit_is_refused_before_it_is_decoded(client, limited, name,
                                                                  limit_variable):
    path = limited.data_root / name
    if name == "rows.parquet":  # the metadata says the rows
        write_parquet(path, MAX_ROWS + 1, "hello")
    elif name == "decoded.parquet":  # few rows, each long: 900 x 10 KB decode to 9 MB
        write_parquet(path, MAX_ROWS - 100, "x" * 10_000)
    elif name == "wide.csv":  # the header says the columns
        path.write_text(",".join(f"c{i}" for i in range(1001)) + "\n" + "1," * 1000 + "1\n")
    else:
        path.write_text("".join(json.dumps({"text": f"row {i}"}) + "\n"
                                for i in range(MAX_ROWS + 1)))
    assert path.stat().st_size < 200_000
    started = time.monotonic()
    for request in (("/api/datasets/preview", {"dataset": str(path)}),
                    ("/api/config/check", {"model_name": "owner/model", "dataset": str(path)})):
        answer = client.post(*request[:1], json=request[1])
        body = answer.json()
        message = body["message"] if answer.status_code == 422 else body["problems"][0]["message"]
        assert answer.status_code in (200, 422) and limit_variable in str(body), body
        assert "than this server reads" in message, message
    assert time.monotonic() - started < 60


def test_each_helper_caps_its_own_memory(tmp_path, monkeypatch):
    """A preview whose data fits the data limits but not the helper's memory fails as out of
    memory inside the helper (a real subprocess), not on the machine."""
    from trainers.errors import ModelForgeError
    from trainers.tools.preview import PreviewRequest, run_preview

    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "big.parquet"  # 200 MB of distinct text, under the 512 MB data limit
    pq.write_table(pa.table({"text": ["y" * 1000 + str(i) for i in range(200_000)]}), path)
    monkeypatch.setenv("MODELFORGE_HELPER_MEMORY_GB", "0.3")
    with pytest.raises(ModelForgeError) as caught:
        run_preview(PreviewRequest(dataset=str(path), n=1))
    assert caught.value.error_type in ("oom", "preview_crashed"), caught.value.to_dict()
    monkeypatch.setenv("MODELFORGE_HELPER_MEMORY_GB", "lots")
    with pytest.raises(ModelForgeError, match="MODELFORGE_HELPER_MEMORY_GB='lots'"):
        run_preview(PreviewRequest(dataset=str(SAMPLE_SFT), n=1))


# --- item 5: files -------------------------------------------------------------------------------

def test_the_data_file_is_read_only_by_the_path_it_was_checked_under(tmp_path):
    """A config holds the resolved path; a link swapped in later (for the file or a folder
    above it) is refused, and nothing of the file it leads to is read."""
    from trainers.data import read_rows
    from trainers.errors import DataError

    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "data.jsonl").write_text(json.dumps({"text": MARKER}) + "\n")
    root = tmp_path / "root"
    (root / "folder").mkdir(parents=True)
    checked = root / "folder" / "data.jsonl"
    checked.write_text(json.dumps({"text": "fine"}) + "\n")
    assert read_rows(str(checked))[0] == [{"text": "fine"}]

    checked.unlink()
    checked.symlink_to(outside / "data.jsonl")  # the file swapped for a link
    with pytest.raises(DataError, match="symbolic link") as caught:
        read_rows(str(checked))
    assert MARKER not in str(caught.value)
    shutil.rmtree(root / "folder")
    (root / "folder").symlink_to(outside, target_is_directory=True)  # a folder above it
    with pytest.raises(DataError, match="symbolic link") as caught:
        read_rows(str(checked))
    assert MARKER not in str(caught.value)


def test_the_adapter_zip_refuses_a_linked_adapter_folder_and_leaves_no_file(client, limited):
    before = set(Path(tempfile.gettempdir()).glob("modelforge-*"))
    good = client.get(f"/api/runs/{limited.runs['good']}/adapter")
    assert good.status_code == 200 and good.headers["content-type"] == "application/zip"
    assert int(good.headers["content-length"]) == len(good.content)
    linked = client.get(f"/api/runs/{limited.runs['linked']}/adapter")
    assert_error(linked, 403, "path_not_allowed")
    assert MARKER not in linked.text
    assert set(Path(tempfile.gettempdir()).glob("modelforge-*")) <= before


def test_a_dashboard_zip_is_removed_after_gradio_has_copied_it(tmp_path):
    from modelforge_ui.tabs.context import make_zip

    (tmp_path / "a.txt").write_text("a")
    made = make_zip("adapter-x", {"adapter/a.txt": tmp_path / "a.txt"}, keep_s=0.2)
    assert made.is_file()
    deadline = time.monotonic() + 10
    while made.parent.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not made.parent.exists()


# --- item 6: no 500s ------------------------------------------------------------------------------

def post_json(client: httpx.Client, path: str, body: dict) -> httpx.Response:
    # json.dumps writes a lone surrogate as the escape "\ud800", as an attacker's JSON would
    return client.post(path, content=json.dumps(body), headers={"content-type":
                                                                "application/json"})


def problems_of(response: httpx.Response) -> dict[str, str]:
    assert response.status_code in (200, 422), (response.status_code, response.text[:300])
    return {p["field"]: p["message"] for p in response.json()["problems"]}


@pytest.mark.parametrize("field", ["name", "dataset_split", "output_dir", "dataset",
                                   "model_name"])
def test_a_lone_surrogate_is_a_field_error_everywhere(client, tiny_config, field):
    config = tiny_config(**{field: "a\ud800b"})
    for path in ("/api/config/check", "/api/config/estimate", "/api/start_training"):
        problems = problems_of(post_json(client, path, config))
        assert "lone surrogate" in problems[field], (path, problems)
    preview_field = {"dataset_split": "split"}.get(field, field)
    if preview_field in ("dataset", "model_name", "split"):
        answer = post_json(client, "/api/datasets/preview", {"dataset": str(SAMPLE_SFT),
                                                             preview_field: "a\ud800"})
        assert "lone surrogate" in problems_of(answer)[preview_field]


def test_a_lone_surrogate_in_a_rename_is_a_field_error(client, limited):
    answer = client.patch(f"/api/runs/{limited.runs['good']}", content=json.dumps(
        {"name": "\ud800"}), headers={"content-type": "application/json"})
    assert "lone surrogate" in problems_of(answer)["name"]


def test_numbers_that_do_not_fit_are_field_errors(client, tiny_config):
    answer = post_json(client, "/api/config/estimate", tiny_config(max_seq_length=10**400))
    assert "at most 1048576" in problems_of(answer)["max_seq_length"]
    answer = post_json(client, "/api/config/estimate", tiny_config(lora_r=10**400))
    assert "401 digits" in problems_of(answer)["lora_r"]  # no range of its own: any huge number
    for steps in (10**30, 10**9):
        answer = post_json(client, "/api/config/check", tiny_config(max_steps=steps))
        assert "from 1 to 100,000,000" in problems_of(answer)["max_steps"]


def test_a_tiny_eval_split_is_refused_with_the_rows_it_needs(client, tiny_config):
    answer = post_json(client, "/api/config/check", tiny_config(eval_split=0.0001))
    message = problems_of(answer)["eval_split"]
    assert "holds out 1 of 400 examples" in message and "at least 0.01 (4 examples)" in message


def test_output_dir_cannot_be_an_allowed_root_itself(client, tiny_config, limited):
    for value in (".", str(limited.data_dir / "outputs")):  # an empty root: only this rule
        answer = post_json(client, "/api/config/check", tiny_config(output_dir=value))
        assert "is an allowed root itself" in problems_of(answer)["output_dir"], value


def test_renames_racing_deletes_are_404s_not_500s(limited):
    """Each run: a delete and renames sent at the same moment (a barrier releases them)."""
    clients = [limited.client() for _ in range(6)]
    statuses = []
    with ThreadPoolExecutor(len(clients)) as pool:
        for run_id in limited.runs["doomed"]:
            barrier = threading.Barrier(len(clients))

            def hit(i: int) -> int:
                barrier.wait()
                if i == 0:
                    return clients[i].delete(f"/api/runs/{run_id}").status_code
                return clients[i].patch(f"/api/runs/{run_id}", json={"name": "n"}).status_code

            statuses += pool.map(hit, range(len(clients)))
    for c in clients:
        c.close()
    assert set(statuses) <= {200, 404}, statuses


# --- items 3, 4, 6: the dashboard's routes and its login, with a token --------------------------

@pytest.fixture(scope="module")
def token_dashboard(tmp_path_factory):
    srv = LiveServer(tmp_path_factory.mktemp("limits-token") / "data", token=TOKEN,
                     dashboard=True)
    yield srv.start()
    srv.close()


def from_address(address: str) -> httpx.Client:
    """A client whose connections come from this loopback address (all of 127/8 is local)."""
    return httpx.Client(transport=httpx.HTTPTransport(local_address=address), timeout=60)


def login(client: httpx.Client, url: str, password: str, **headers) -> httpx.Response:
    return client.post(f"{url}/login", data={"username": "me", "password": password},
                       headers=headers)


def test_a_big_dashboard_body_is_refused_before_it_is_read_or_the_login_checked(
        token_dashboard):
    port = token_dashboard.port
    line = first_line(port, head("POST", "/gradio_api/queue/join", port, 300 * 2**20,
                                 "Content-Type: application/json\n"), b'{"data": [')
    assert " 413 " in line, line


def test_an_unknown_fn_index_is_a_json_4xx(token_dashboard):
    with from_address("127.0.0.7") as browser:
        assert login(browser, token_dashboard.url, TOKEN).status_code == 200
        config = browser.get(f"{token_dashboard.url}/config").json()
        known = len(config["dependencies"])
        for index in (9999, -1, 2**70, "x", None):
            answer = browser.post(f"{token_dashboard.url}/gradio_api/queue/join", json={
                "data": [], "fn_index": index, "session_hash": uuid.uuid4().hex})
            assert answer.status_code == 422, (index, answer.status_code, answer.text[:200])
            assert answer.json()["problems"][0]["field"] == "fn_index"
        assert known > 0


def test_x_forwarded_host_is_held_to_the_host_rule(token_dashboard):
    for path in ("/", "/config", "/api/health"):
        answer = httpx.get(token_dashboard.url + path,
                           headers={"X-Forwarded-Host": "evil.example"})
        assert_error(answer, 400, "bad_host")
        assert "X-Forwarded-Host" in answer.json()["message"]
    fine = httpx.get(token_dashboard.url + "/api/health",
                     headers={"X-Forwarded-Host": "127.0.0.1:9", "Authorization":
                              f"Bearer {TOKEN}"})
    assert fine.status_code == 200


def test_trace_gets_the_apis_error_json(token_dashboard):
    """With the dashboard mounted at "/", its catch-all answered TRACE in Gradio's words."""
    with token_dashboard.client() as c:
        assert_error(c.request("TRACE", "/api/health"), 405, "method_not_allowed")


def test_a_forged_x_forwarded_for_does_not_reset_the_login_limit(token_dashboard):
    # from 127.0.0.1, which uvicorn trusts by default unless told otherwise
    with from_address("127.0.0.1") as guesser:
        statuses = [login(guesser, token_dashboard.url, f"no{i}",
                          **{"X-Forwarded-For": f"203.0.113.{i}"}).status_code
                    for i in range(8)]
    assert statuses[:5] == [400] * 5 and statuses[5:] == [429] * 3, statuses


def test_behind_a_named_proxy_each_client_has_its_own_login_limit(tmp_path):
    """--forwarded-allow-ips names the proxy (here: 127.0.0.1): the clients behind it are told
    apart by X-Forwarded-For, so one guesser does not lock out the others."""
    srv = LiveServer(tmp_path / "data", "--forwarded-allow-ips", "127.0.0.1", token=TOKEN,
                     dashboard=True).start()
    try:
        with httpx.Client(timeout=60) as proxy:
            guesses = [login(proxy, srv.url, f"no{i}", **{"X-Forwarded-For": "203.0.113.9"})
                       .status_code for i in range(7)]
            assert guesses[5:] == [429, 429], guesses
            other = login(proxy, srv.url, TOKEN, **{"X-Forwarded-For": "203.0.113.10"})
            assert other.status_code == 200, other.text[:200]
    finally:
        srv.close()


def test_many_addresses_meet_the_global_cap_on_failed_logins(token_dashboard):
    """Last in this module: it leaves every login refused for up to a minute."""
    def guess(i: int) -> int:
        with from_address(f"127.0.1.{i + 1}") as guesser:
            return login(guesser, token_dashboard.url, f"no{i}").status_code

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(guess, range(40)))
    assert statuses.count(429) >= 40 - 30 and set(statuses) <= {400, 429}, statuses
    with from_address("127.0.2.1") as newcomer:  # a fresh address, the right password
        answer = login(newcomer, token_dashboard.url, TOKEN)
    assert answer.status_code == 429 and 0 < int(answer.headers["Retry-After"]) <= 60


# --- item 2: read-only is "a Space without a token", whatever the address -----------------------

@pytest.fixture(scope="module")
def space(demo_model, tmp_path_factory):
    """app.py as on a Space whose own proxy forwards to 127.0.0.1, with no token."""
    base = tmp_path_factory.mktemp("limits-space")
    shutil.copytree(demo_model, base / "data" / "models" / "demo")  # the Space's demo model
    port = free_port()
    env = {"SPACE_ID": "someone/modelforge", "GRADIO_SERVER_NAME": "127.0.0.1",
           "GRADIO_SERVER_PORT": str(port), "MODELFORGE_HOME": str(base / "data"),
           "MODELFORGE_TOKEN": "", "GRADIO_TEMP_DIR": str(base / "gradio-cache")}
    with running_server(["app.py"], base / "app.log", env, port=port) as url:
        yield url, base / "gradio-cache", base / "data" / "models" / "demo"


def test_a_space_without_a_token_is_read_only_on_loopback(space, tiny_config):
    url, cache, demo = space
    refused = httpx.post(f"{url}/api/start_training", json=tiny_config(model_name=str(demo)))
    assert_error(refused, 403, "read_only")
    refused = httpx.post(f"{url}/gradio_api/upload", files={"files": ("a.bin", b"x" * 4096)})
    assert_error(refused, 403, "read_only")
    assert not [p for p in cache.rglob("*") if p.is_file() and p.name == "a.bin"]
    refused = httpx.post(f"{url}/api/datasets", files={"file": ("a.jsonl", b"{}\n")})
    assert_error(refused, 403, "read_only")
    estimate = httpx.post(f"{url}/api/config/estimate", json=tiny_config(model_name=str(demo)),
                          timeout=60)
    assert estimate.status_code == 200, estimate.text[:300]


def test_app_settings_decide_read_only_and_the_spaces_proxy(tmp_path):
    from app import SPACE_PROXIES, settings_from_env
    from modelforge_ui.read_only import refuses

    space = {"SPACE_ID": "someone/modelforge", "MODELFORGE_HOME": str(tmp_path),
             "GRADIO_SERVER_NAME": "127.0.0.1"}
    settings = settings_from_env(space)
    assert settings.read_only and settings.forwarded_allow_ips == SPACE_PROXIES
    named = settings_from_env({**space, "MODELFORGE_FORWARDED_ALLOW_IPS": "10.1.2.3"})
    assert named.forwarded_allow_ips == ("10.1.2.3",)
    assert not settings_from_env({"MODELFORGE_HOME": str(tmp_path)}).forwarded_allow_ips
    assert refuses("POST", "/gradio_api/upload") and not refuses("POST", "/api/config/estimate")
    with pytest.raises(Exception, match="not an IP address or network"):
        settings_from_env({**space, "MODELFORGE_FORWARDED_ALLOW_IPS": "proxy.example"})

