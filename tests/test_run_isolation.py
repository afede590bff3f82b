"""Over real HTTP: a run never writes into a folder another run or a model owns. An output_dir
that is claimed by a queued or running run, already holds a run's adapter, or lies in a model
folder is refused (422, naming output_dir) before anything is queued; the first run's adapter
and the model stay byte for byte as they were."""

from __future__ import annotations

import hashlib
import io
import shutil
import zipfile
from pathlib import Path

import httpx
import pytest

from live_server import LiveServer, start_run, wait_status
from trainers.tools.demo import SAMPLE_DIR

pytestmark = pytest.mark.slow


def files(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def downloaded(client: httpx.Client, run_id: str) -> dict[str, bytes]:
    response = client.get(f"/api/runs/{run_id}/adapter")
    assert response.status_code == 200, response.text
    with zipfile.ZipFile(io.BytesIO(response.content)) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


def assert_refused(response: httpx.Response, words: str) -> None:
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error_type"] == "config", body
    assert [p["field"] for p in body["problems"]] == ["output_dir"], body
    assert words in body["problems"][0]["message"], body


def test_output_dir_of_another_run_or_a_model_is_refused(tmp_path, demo_model, tiny_config):
    model = Path(shutil.copytree(demo_model, tmp_path / "model"))  # a model this test may lose
    model_files = files(model)
    srv = LiveServer(tmp_path / "data", "--allowed-root", str(model),
                     "--allowed-root", str(SAMPLE_DIR)).start()
    try:
        with srv.client() as client:
            def config(output_dir: str) -> dict:
                return tiny_config(model_name=str(model), max_steps=2, output_dir=output_dir)

            first = start_run(client, config("shared"))
            # queued or loading: its output_dir is still empty, but it is claimed
            assert_refused(client.post("/api/start_training", json=config("shared")),
                           f"claimed by run {first}")
            record = wait_status(client, first)
            assert record["status"] == "succeeded", record["summary"]
            adapter = Path(record["summary"]["adapter_dir"])
            assert adapter == srv.data_dir / "outputs" / "shared"
            adapter_files, adapter_zip = files(adapter), downloaded(client, first)

            assert_refused(client.post("/api/start_training", json=config("shared")),
                           "is the model or adapter folder")  # the first run's adapter
            assert_refused(client.post("/api/start_training", json=config("shared/inner")),
                           "is inside the model or adapter folder")  # in the first run's adapter
            assert_refused(client.post("/api/start_training", json=config(str(model))),
                           "is the model or adapter folder")
            assert_refused(client.post("/api/start_training",
                                       json=config(str(model / "adapter"))),
                           "is inside the model or adapter folder")

            # the config checker applies the same rule, before anything is submitted
            checked = client.post("/api/config/check", json=config(str(model))).json()
            assert not checked["ok"], checked
            assert [p["field"] for p in checked["problems"]] == ["output_dir"], checked

            assert client.get("/api/runs").json()["total"] == 1  # nothing refused was recorded
            assert files(adapter) == adapter_files
            assert downloaded(client, first) == adapter_zip
        assert files(model) == model_files
    finally:
        srv.close()
