"""A data set preview in its own process, so the server never imports torch or transformers.

    echo '{"dataset": "...", "model_name": "...", "n": 5}' | python -m trainers.tools.preview

Prints one JSON object: {"ok": true, "result": {...}} or {"ok": false, "error": {error_type,
message, hint}}. `run_preview(request)` runs it from the server.
"""

from __future__ import annotations

import json
import subprocess
import sys

from trainers.errors import ModelForgeError

PREVIEW_TIMEOUT_S = 180


class PreviewTimeout(ModelForgeError):
    error_type = "timeout"


class PreviewCrashed(ModelForgeError):
    error_type = "preview_crashed"


def run_preview(request: dict, timeout_s: float = PREVIEW_TIMEOUT_S) -> dict:
    """Run the preview in a subprocess; return its result or raise a ModelForgeError."""
    import tempfile

    from trainers.runs.process import child_env

    env = child_env()
    try:
        # an empty working directory: a hub-shaped name like "owner/name" must not resolve to
        # a local folder outside the allowed roots
        with tempfile.TemporaryDirectory() as empty_cwd:
            out = subprocess.run([sys.executable, "-m", "trainers.tools.preview"], cwd=empty_cwd,
                                 env=env, input=json.dumps(request), capture_output=True,
                                 text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise PreviewTimeout(f"The preview took longer than {timeout_s:.0f} s.",
                             "Preview a smaller file, or leave model_name empty to skip "
                             "tokenization.") from None
    lines = out.stdout.strip().splitlines()
    try:
        reply = json.loads(lines[-1])
    except (IndexError, ValueError):
        tail = out.stderr.strip()[-1500:]
        raise PreviewCrashed(f"The preview process failed (exit code {out.returncode}): {tail}",
                              "See the server log; this is a bug if the file is valid.") from None
    if reply["ok"]:
        return reply["result"]
    error = ModelForgeError(reply["error"]["message"], reply["error"].get("hint", ""))
    error.error_type = reply["error"].get("error_type", "error")
    raise error


def preview(request: dict) -> dict:
    from trainers import data

    tokenizer = None
    if request.get("model_name"):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(
            request["model_name"], trust_remote_code=bool(request.get("trust_remote_code")))
    return data.preview(request["dataset"], tokenizer, n=request.get("n", 5),
                        max_seq_length=request.get("max_seq_length"),
                        split=request.get("split", "train"),
                        column_mapping=request.get("column_mapping") or {},
                        strategy=request.get("strategy", "sft"),
                        completion_only_loss=request.get("completion_only_loss", True))


def main() -> int:
    from trainers.diagnostics import diagnose_exception

    try:
        reply = {"ok": True, "result": preview(json.loads(sys.stdin.read()))}
    except Exception as exc:  # noqa: BLE001 - every failure goes back to the caller as JSON
        reply = {"ok": False, "error": diagnose_exception(exc)}
    print(json.dumps(reply, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
