"""The one-shot tools that load a model (`python -m trainers.tools.playground`,
`python -m trainers.tools.export`) run in their own processes, outside the run queue: torch
never loads into the server. The Playground tab and the REST API read their JSON lines here.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from typing import Iterator

from trainers.runs.process import child_env


def off_a_busy_gpu(manager) -> tuple[dict, str]:
    """(environment, note): while a job trains, a tool keeps off its GPU (a model loaded beside
    it could push it out of memory) and uses the CPU."""
    if manager.active() and manager.devices != ["cpu"]:
        return {"CUDA_VISIBLE_DEVICES": ""}, " (on the CPU: a training job holds the GPU)"
    return {}, ""


def stream_module(module: str, args: list[str], stdin_text: str = "",
                  extra_env: dict | None = None) -> Iterator[dict]:
    """Run `python -m module args` and yield each JSON line it prints ({"log": line} for
    others). Ends with {"exit_code": n, "stderr_tail": ...}. The process is killed when the
    caller stops reading (the browser left)."""
    env = child_env({"PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false",
                     **(extra_env or {})})
    with tempfile.TemporaryFile() as stderr:
        proc = subprocess.Popen([sys.executable, "-m", module, *args], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=stderr, text=True, env=env)
        try:
            proc.stdin.write(stdin_text)
            proc.stdin.close()
            for line in proc.stdout:
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError:
                    obj = None
                yield obj if isinstance(obj, dict) else {"log": line.rstrip("\n")}
            proc.wait()
            stderr.seek(0)
            tail = stderr.read()[-4000:].decode("utf-8", errors="replace")
            yield {"exit_code": proc.returncode, "stderr_tail": tail}
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
