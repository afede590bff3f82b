"""A data set preview in its own process, so the server never imports torch or transformers.

    echo '{"dataset": "...", "model_name": "...", "n": 5}' | python -m trainers.tools.preview

Prints one JSON object: {"ok": true, "result": {...}} or {"ok": false, "error": {error_type,
message, hint}}. `PreviewRequest` is what the API and the dashboard ask for (validated once,
here); `run_preview(request)` runs it from the server.
"""

import json
import subprocess
import sys
from typing import Optional

from pydantic import ConfigDict, Field, ValidationError

from trainers.config import TextFields, TrainConfig, config_field, plain_problem
from trainers.errors import ConfigError, ModelForgeError

PREVIEW_TIMEOUT_S = 180


class PreviewTimeout(ModelForgeError):
    error_type = "timeout"


class PreviewCrashed(ModelForgeError):
    error_type = "preview_crashed"


# The training config's name for a preview field, where it differs.
CONFIG_NAMES = {"split": "dataset_split"}


def _config_default(name: str) -> object:
    """The training config's default: an omitted field previews what a run would read."""
    return TrainConfig.model_fields[CONFIG_NAMES.get(name, name)].default


class PreviewRequest(TextFields):
    """What POST /api/datasets/preview and the dashboard's Preview data ask for."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    dataset: config_field("dataset", "An upload's path (or name), or a file under an allowed "
                                     "root.")
    n: int = Field(5, ge=1, le=50, description="How many rendered examples to return.")
    model_name: config_field("model_name", "Its tokenizer gives the token statistics; empty = "
                                           "no tokenization.") = ""
    max_seq_length: Optional[int] = Field(None, ge=1,
                                          description="Count examples longer than this.")
    split: config_field("dataset_split") = _config_default("split")
    column_mapping: config_field("column_mapping") = _config_default("column_mapping")
    strategy: config_field("strategy") = _config_default("strategy")
    completion_only_loss: config_field("completion_only_loss") = \
        _config_default("completion_only_loss")
    trust_remote_code: config_field("trust_remote_code") = _config_default("trust_remote_code")

    @classmethod
    def from_config(cls, config: dict) -> "PreviewRequest":
        """The preview of what a run with this (partial) training config would read; the
        first `n` rows. ConfigError names what is wrong."""
        names = {CONFIG_NAMES.get(name, name): name for name in cls.model_fields if name != "n"}
        data = {name: config[key] for key, name in names.items() if key in config}
        if data.get("max_seq_length") == -1:  # inferred from the data: no limit to count
            data["max_seq_length"] = None
        try:
            return cls(**data)
        except ValidationError as exc:
            problems = [plain_problem(e, where="the config") for e in exc.errors()]
            raise ConfigError([{**p, "field": CONFIG_NAMES.get(p["field"], p["field"])}
                               for p in problems]) from None


def run_preview(request: PreviewRequest, timeout_s: float = PREVIEW_TIMEOUT_S) -> dict:
    """Run the preview in a subprocess; return its result or raise a ModelForgeError."""
    import tempfile

    from trainers.runs.process import HELPER_MEMORY_ENV, child_env, helper_memory_bytes

    env = child_env({HELPER_MEMORY_ENV: str(helper_memory_bytes() / 2**30)})
    try:
        # an empty working directory: a hub-shaped name like "owner/name" must not resolve to
        # a local folder outside the allowed roots
        with tempfile.TemporaryDirectory() as empty_cwd:
            out = subprocess.run([sys.executable, "-m", "trainers.tools.preview"], cwd=empty_cwd,
                                 env=env, input=request.model_dump_json(), capture_output=True,
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


def preview(request: PreviewRequest) -> dict:
    from trainers import data

    tokenizer = None
    if request.model_name:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(request.model_name,
                                                  trust_remote_code=request.trust_remote_code)
    return data.preview(request.dataset, tokenizer, n=request.n,
                        max_seq_length=request.max_seq_length, split=request.split,
                        column_mapping=request.column_mapping, strategy=request.strategy,
                        completion_only_loss=request.completion_only_loss)


def main() -> int:
    from trainers.diagnostics import diagnose_exception
    from trainers.runs.process import helper_memory_bytes, limit_own_resources

    try:
        limit_own_resources(helper_memory_bytes())  # first: before the data or a tokenizer loads
        request = PreviewRequest.model_validate_json(sys.stdin.read())
        reply = {"ok": True, "result": preview(request)}
    except Exception as exc:  # noqa: BLE001 - every failure goes back to the caller as JSON
        reply = {"ok": False, "error": diagnose_exception(exc)}
    print(json.dumps(reply, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
