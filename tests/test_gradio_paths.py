"""No dashboard handler opens a file the client names: every dependency of the Blocks (hidden
ones included, read from the app's /config) is sent a FileData path outside Gradio's upload
cache over real HTTP, on the tokenless loopback server, the read-only app.py and a token server
after logging in. Plus: the adapter zip skips symlinks, a real upload still works (and is
refused in read-only mode), wrongly typed progress fields do not break the run views, and a
burst of wrong dashboard passwords is refused."""

from __future__ import annotations

import json
import time
import uuid
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from trainers.runs.registry import RunRegistry
from ui_server import free_port, modelforge_run_args, running_server

TOKEN = "paths-token-0123456789abcdef"
MARKER = f"secret-{uuid.uuid4().hex}"  # in every secret file; must never come back
FILE_DATA = {"_type": "gradio.FileData"}
BAD_PROGRESS = {"type": "progress", "step": None, "total_steps": "many", "loss": "abc",
                "tokens_per_s": [1], "elapsed_s": "long", "eta_s": {"s": 1},
                "gpu_mem_allocated_gib": "x"}
GOOD_PROGRESS = {"type": "progress", "step": 2, "total_steps": 4, "loss": 1.25,
                 "tokens_per_s": 123.0, "elapsed_s": 3.0, "eta_s": 3.0}


# --- the servers ---------------------------------------------------------------------------------

def write_secrets(outside: Path) -> list[Path]:
    outside.mkdir(parents=True)
    json_secret = outside / "secret.json"
    json_secret.write_text(json.dumps({"model_name": MARKER}))
    jsonl_secret = outside / "secret.jsonl"
    jsonl_secret.write_text(json.dumps({"prompt": MARKER, "completion": "x"}) + "\n")
    return [json_secret, jsonl_secret]


def write_finished_run(data_dir: Path, outside: Path) -> str:
    """A succeeded run whose adapter folder links to secrets, with wrongly typed progress."""
    registry = RunRegistry(data_dir)
    run = registry.create(None, source="test", config_dict={"model_name": "m", "dataset": "d"})
    run_dir = Path(run["run_dir"])
    adapter = run_dir / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "leak.json").symlink_to(outside / "secret.json")
    (adapter / "leakdir").symlink_to(outside, target_is_directory=True)
    events = [{"type": "started", "provider": "huggingface", "num_train": "?"},
              GOOD_PROGRESS, BAD_PROGRESS, {"type": "finished"}]
    (run_dir / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    registry.set_status(run["id"], "succeeded", {"adapter_dir": str(adapter), "train_loss": "x",
                                                 "tokens_per_s": [1]})
    return run["id"]


class Served:
    def __init__(self, mode, url, client, data_dir, cache_dir, secrets, run_id):
        self.mode, self.url, self.client = mode, url, client
        self.data_dir, self.cache_dir, self.secrets, self.run_id = \
            data_dir, cache_dir, secrets, run_id
        config = client.get("/config")
        assert config.status_code == 200, config.text
        self.config = config.json()
        self.components = {c["id"]: c for c in self.config["components"]}

    def dependency(self, elem_id: str | None = None, label: str | None = None) -> dict:
        """The upload handler of the file component with this elem_id or label."""
        for dep in self.config["dependencies"]:
            if [t[1] for t in dep["targets"]] != ["upload"]:
                continue
            props = self.components[dep["targets"][0][0]]["props"]
            if props.get("elem_id") == elem_id or (label and label in str(props.get("label"))):
                return dep
        raise AssertionError(f"no upload handler for {elem_id or label}")


@pytest.fixture(scope="module", params=["loopback", "read_only", "token"])
def served(request, tmp_path_factory):
    mode = request.param
    base = tmp_path_factory.mktemp(f"paths-{mode}")
    data_dir, cache_dir = base / "data", base / "gradio-cache"
    secrets = write_secrets(base / "outside")
    run_id = write_finished_run(data_dir, base / "outside")
    port = free_port()
    env = {"GRADIO_TEMP_DIR": str(cache_dir), "MODELFORGE_TOKEN": "", "SPACE_ID": "",
           "MODELFORGE_DEMO": ""}
    if mode == "read_only":  # app.py beyond loopback without a token: the public demo mode
        args = ["app.py"]
        env.update({"GRADIO_SERVER_NAME": "0.0.0.0", "GRADIO_SERVER_PORT": str(port),
                    "MODELFORGE_HOME": str(data_dir)})
    else:
        args = modelforge_run_args(port, data_dir)
        env["MODELFORGE_TOKEN"] = TOKEN if mode == "token" else ""
    with running_server(args, base / "server.log", env, port=port) as url:
        with httpx.Client(base_url=url, timeout=60) as client:
            if mode == "token":
                assert client.get("/config").status_code == 401
                login = client.post("/login", data={"username": "me", "password": TOKEN})
                assert login.status_code == 200, login.text
            yield Served(mode, url, client, data_dir, cache_dir, secrets, run_id)


# --- talking to the queue as the browser does ----------------------------------------------------

def call(served: Served, fn_index: int, data: list, session_hash: str | None = None):
    """Join the queue with this dependency and data; (the completed message, every SSE line)."""
    session_hash = session_hash or uuid.uuid4().hex
    joined = served.client.post("/gradio_api/queue/join", json={
        "data": data, "fn_index": fn_index, "session_hash": session_hash,
        "event_data": None, "trigger_id": None})
    assert joined.status_code == 200, joined.text
    event_id = joined.json()["event_id"]
    lines = [joined.text]
    with served.client.stream("GET", "/gradio_api/queue/data",
                              params={"session_hash": session_hash}) as stream:
        for line in stream.iter_lines():
            lines.append(line)
            if not line.startswith("data:"):
                continue
            message = json.loads(line[5:])
            if message.get("event_id") == event_id and message.get("msg") == "process_completed":
                return message, "\n".join(lines)
    raise AssertionError(f"fn {fn_index}: the stream ended before completion:\n{lines}")


def file_data(path: Path | str) -> dict:
    return {"path": str(path), "orig_name": Path(path).name, "meta": FILE_DATA}


def files_holding(folder: Path, text: str) -> list[Path]:
    if not folder.is_dir():
        return []
    return [p for p in folder.rglob("*")
            if p.is_file() and not p.is_symlink() and text.encode() in p.read_bytes()]


def error_text(message: dict) -> str:
    return str(message.get("output", {}).get("error"))


# --- item 1: no FileData path outside the upload cache -------------------------------------------

def test_no_dependency_opens_a_file_outside_the_upload_cache(served):
    deps = [d for d in served.config["dependencies"] if d["backend_fn"] and d["inputs"]]
    hidden = [d for d in deps if d["api_visibility"] != "public" or d["api_name"] is False
              or str(d["api_name"]).startswith("false")]
    assert len(deps) > 20 and hidden, "the config should list every dependency, hidden included"
    leaked, not_refused = [], []
    for secret in served.secrets:
        for dep in deps:
            message, stream = call(served, dep["id"], [file_data(secret)] * len(dep["inputs"]))
            name = f"{dep['id']}:{dep['api_name']}:{secret.name}"
            if MARKER in stream:
                leaked.append(name)
            stateful = all(served.components[i]["type"] == "state" for i in dep["inputs"])
            if not stateful and "not uploaded by a user" not in error_text(message):
                not_refused.append(name)  # Gradio's own check should refuse it before the handler
    assert leaked == []
    assert files_holding(served.data_dir / "datasets", MARKER) == []
    assert files_holding(served.cache_dir, MARKER) == []
    assert not_refused == []


def upload(served: Served, name: str, content: str) -> str:
    """A real upload through Gradio's route; the path in its cache."""
    response = served.client.post("/gradio_api/upload", files={"files": (name, content.encode())})
    assert response.status_code == 200, response.text
    [path] = response.json()
    assert Path(path).is_relative_to(served.cache_dir.resolve())
    return path


def test_a_real_upload_still_imports_a_config_and_stores_a_data_set(served):
    if served.mode == "read_only":  # Gradio's upload route itself is refused: nothing stored
        refused = served.client.post("/gradio_api/upload", files={"files": ("r.jsonl", b"{}")})
        assert refused.status_code == 403 and refused.json()["error_type"] == "read_only"
        return
    config = '{"lora_r": 4, "model_name": "uploaded-model"}'
    importer = served.dependency(label="import a config file")
    message, _ = call(served, importer["id"], [file_data(upload(served, "cfg.json", config))])
    assert message["success"] is True, message
    assert message["output"]["data"][0] == config

    rows = '{"prompt": "hi", "completion": "there"}\n'
    uploader = served.dependency(elem_id="upload")
    message, _ = call(served, uploader["id"], [file_data(upload(served, "rows.jsonl", rows))])
    stored = sorted((served.data_dir / "datasets").glob("rows*.jsonl"))
    assert message["success"] is True, message
    assert stored and stored[-1].read_text() == rows
    assert message["output"]["data"][0] == str(stored[-1])


# --- the adapter zip and Gradio's file route never follow a symlink out --------------------------

def test_the_adapter_zip_skips_symlinks(served):
    deps = {d["api_name"]: d for d in served.config["dependencies"]}
    message, stream = call(served, deps["download_adapter"]["id"], [served.run_id])
    assert message["success"] is True, message
    assert MARKER not in stream
    with zipfile.ZipFile(message["output"]["data"][0]["path"]) as zf:
        names = zf.namelist()
        assert names == ["adapter/adapter_config.json", "adapter/README.md"]  # + model card
        assert all(MARKER.encode() not in zf.read(n) for n in names)
    adapter = Path(RunRegistry(served.data_dir).get(served.run_id)["run_dir"]) / "adapter"
    for link in ("leak.json", "leakdir/secret.json"):
        response = served.client.get(f"/gradio_api/file={adapter / link}")
        assert response.status_code >= 400 and MARKER not in response.text, link


# --- item 4: wrongly typed progress fields -------------------------------------------------------

def test_wrongly_typed_progress_fields_do_not_break_the_run_views(served):
    deps = {d["api_name"]: d for d in served.config["dependencies"]}
    message, _ = call(served, deps["run_details"]["id"], [served.run_id])
    assert message["success"] is True, message
    summary = message["output"]["data"][0]
    assert "**succeeded**" in summary and "loss -" in summary and "step **0 / 0**" in summary

    message, _ = call(served, deps["history"]["id"], [served.run_id])
    assert message["success"] is True, message
    row = message["output"]["data"][0]["data"][0]
    assert row[0] == served.run_id and row[7] == "-"  # tokens/s was a list: not shown

    # The Training tab's status: the page's load event picks the run, the timer shows it.
    session = uuid.uuid4().hex
    load = next(d for d in served.config["dependencies"]
                if [t[1] for t in d["targets"]] == ["load"])
    assert call(served, load["id"], [], session)[0]["success"] is True
    message, _ = call(served, deps["refresh_run"]["id"], [None], session)
    assert message["success"] is True, message
    status, loss = message["output"]["data"][:2]
    assert served.run_id in status and "**succeeded**" in status
    # the valid point only: one point, so no plot yet (a plot laid out on one point clips its
    # labels; the Training tab draws from two points on)
    assert loss is None
    from modelforge_ui import views
    from trainers.events import read_events

    run_dir = RunRegistry(served.data_dir).get(served.run_id)["run_dir"]
    assert views.metric_frames(read_events(run_dir))["loss"].values.tolist() == [[2, 1.25]]


# --- item 4: the dashboard login slows down repeated failures ------------------------------------

@pytest.mark.parametrize("served", ["token"], indirect=True)  # the one with a login
def test_a_burst_of_wrong_passwords_is_refused_and_the_right_one_works_after(served):
    def wrong(i: int) -> httpx.Response:
        return httpx.post(f"{served.url}/login", data={"username": "me", "password": f"no{i}"},
                          timeout=60)

    with ThreadPoolExecutor(8) as pool:  # concurrent, as a script would send them
        statuses = [r.status_code for r in pool.map(wrong, range(40))]
    assert statuses.count(400) <= 6 and statuses.count(429) >= 34, statuses
    # Wait out the lockouts with more wrong tries until one is at least 4 s long, so that a
    # loaded machine cannot let it run out before the right password below is sent.
    for i in range(40, 60):
        answer = wrong(i)
        if answer.status_code == 429 and float(answer.headers["Retry-After"]) >= 4:
            break
        if answer.status_code == 429:
            time.sleep(float(answer.headers["Retry-After"]) + 0.1)
    else:
        pytest.fail("the lockout never grew to 4 s")
    with httpx.Client(base_url=served.url, timeout=60) as browser:
        right = browser.post("/login", data={"username": "me", "password": TOKEN})
        assert right.status_code == 429  # while locked out no password is even checked
        wait = float(right.headers["Retry-After"])
        assert 0 < wait <= 60 and "try again" in right.json()["detail"]
        time.sleep(wait + 0.2)
        right = browser.post("/login", data={"username": "me", "password": TOKEN})
        assert right.status_code == 200, right.text
        assert browser.get("/config").status_code == 200


def test_the_views_show_the_valid_fields_and_skip_the_rest():
    from modelforge_ui import views
    from modelforge_ui.tabs.benchmark import status_markdown

    odd = {**BAD_PROGRESS, "step": 10**30, "eta_s": float("inf"), "elapsed_s": float("nan")}
    run = {"id": "r", "name": "n", "status": "running", "kind": "train", "started_at": None,
           "config": {}, "progress": odd, "summary": {"tokens_per_s": "fast"}}
    text = views.progress_markdown(run)
    assert "step **0 / 0**" in text and "ETA unknown" in text and "loss -" in text
    assert views.history_table([run]).iloc[0]["tokens/s"] == "-"
    frames = views.metric_frames([{**odd, "seq": 0}, {**GOOD_PROGRESS, "seq": 1},
                                  {"type": ["progress"], "step": 3}])
    assert frames["loss"].values.tolist() == [[2, 1.25]]
    assert frames["gpu_mem_allocated_gib"].empty
    bench = [{"seq": 0, "type": "variant_started", "index": 1, "total": 2,
              "provider": "huggingface", "mode": "lora16"},
             {"seq": 1, "type": "progress", "step": "x", "total_steps": None},
             {"seq": 2, "type": "variant_finished", "name": "v", "tokens_per_s": "abc",
              "median_step_s": [1]}]
    text = status_markdown(run, bench)
    assert "step - / -" in text and "- v: - tokens/s, median step - s" in text
