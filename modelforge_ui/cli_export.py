"""`modelforge export`: a run's adapter merged into its base model (a 16-bit model folder) and,
with --gguf, converted to GGUF with an Ollama Modelfile beside it.

  modelforge export RUN_ID --gguf q8_0
  modelforge export RUN_DIR --dtype bfloat16 --push-to-hub USER/REPO

The work is `python -m trainers.tools.export` in its own process, as the Playground tab and
POST /api/runs/{id}/export run it: this command checks its arguments first (no torch), then
shows the tool's progress and its result.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from trainers.errors import ModelForgeError
from trainers.tools.export import DTYPES  # no torch at import: the tool loads it when it runs
from trainers.tools.gguf_export import GGUF_TYPES, GGUFExportError, check_type


class ExportArgumentError(ModelForgeError):
    error_type = "export"


def add_export_command(subparsers) -> None:
    export = subparsers.add_parser(
        "export", help="merge a run's adapter into its base model; with --gguf, also a GGUF "
                       "file and an Ollama Modelfile",
        description=__doc__.split("\n\n")[0])
    export.add_argument("run", metavar="RUN",
                        help="a run id (the Runs tab, GET /api/runs) or a run's folder")
    export.add_argument("--gguf", metavar="TYPE", type=_gguf_type,
                        help=f"also write RUN_DIR/gguf/TYPE/RUN_ID-TYPE.gguf and its Modelfile; "
                             f"TYPE is one of {', '.join(GGUF_TYPES)}")
    export.add_argument("--dtype", default="float16", choices=DTYPES,
                        help="the merged model's type (default float16; --gguf bf16 merges "
                             "in bfloat16)")
    export.add_argument("--out", type=Path, metavar="DIR",
                        help="the merged model's folder (default RUN_DIR/merged)")
    export.add_argument("--push-to-hub", metavar="REPO_ID",
                        help="upload the merged folder to this Hub repo (needs a network and "
                             "HF_TOKEN with write access)")
    export.add_argument("--public", action="store_true", help="create a public Hub repo")
    export.add_argument("--data-dir", type=Path,
                        help="where runs are stored, to find RUN_ID (default: MODELFORGE_HOME "
                             "or ~/.local/share/modelforge)")
    export.set_defaults(func=cmd_export)


def _gguf_type(value: str) -> str:
    """argparse's check of --gguf: its message names the argument, this one the fix."""
    try:
        return check_type(value)
    except GGUFExportError as exc:
        raise argparse.ArgumentTypeError(f"{exc.message} {exc.hint}") from None


def cmd_export(args) -> int:
    from modelforge_ui.tool_process import stream_module

    try:
        run_dir = run_folder(args.run, args.data_dir)
    except ModelForgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    tool_args = [str(run_dir), "--dtype", args.dtype]
    for flag, value in (("--gguf", args.gguf), ("--out", args.out),
                        ("--push-to-hub", args.push_to_hub)):
        if value:
            tool_args += [flag, str(value)]
    tool_args += ["--public"] if args.public else []
    done, failure, ended = None, None, {}
    for message in stream_module("trainers.tools.export", tool_args):
        if "stage" in message:
            print(f"{message['stage']}: {message['message']}", flush=True)
        elif message.get("done"):
            done = message
        elif message.get("error_type"):
            failure = message
        elif "exit_code" in message:
            ended = message
    if done:
        print(f"\nmerged model: {done['out_dir']}")
        if done.get("gguf"):
            gguf = Path(done["gguf"])
            print(f"GGUF: {gguf}\nOllama: cd {gguf.parent} && ollama create NAME -f Modelfile")
        if done.get("url"):
            print(f"on the Hub: {done['url']}")
        return 0
    if failure:
        print(f"error: {ModelForgeError(failure['message'], failure.get('hint', ''))}",
              file=sys.stderr)
    else:
        print(f"error: the export stopped (exit code {ended.get('exit_code')}):\n"
              f"{ended.get('stderr_tail', '')}", file=sys.stderr)
    return 1


def run_folder(run: str, data_dir: Path | None) -> Path:
    """RUN as a run's folder: a folder with the run's config.json, or a run id of the data
    directory whose run has finished with an adapter; else an error naming the argument."""
    from trainers.runs.jobs import adapter_dir
    from trainers.runs.process import default_data_dir
    from trainers.runs.registry import RunRegistry
    from trainers.tools.playground import adapter_dir as saved_adapter

    folder = Path(run)
    if folder.is_dir():
        if not (folder / "config.json").is_file():
            raise ExportArgumentError(f"RUN: {folder} is not a run's folder (it has no "
                                      "config.json).",
                                      "Give a run id, or the folder of a run (under "
                                      "DATA_DIR/runs/).")
        saved_adapter(folder)  # its events name the adapter, or say why there is none
        return folder.resolve()
    data_dir = data_dir or default_data_dir()
    if not Path(data_dir).is_dir():
        raise ExportArgumentError(f"--data-dir: {data_dir} does not exist.",
                                  "Pass the data directory the run was trained in.")
    registry = RunRegistry(data_dir)
    try:
        record = registry.get(run)
    except KeyError:
        raise ExportArgumentError(f"RUN: no run with id {run!r} in {registry.data_dir}, and "
                                  "no folder at that path.",
                                  "Give a run id from the Runs tab or GET /api/runs (with "
                                  "--data-dir for another data directory), or a run's "
                                  "folder.") from None
    adapter_dir(record)  # still running, or ended without an adapter: said now, not after
    return Path(record["run_dir"])
