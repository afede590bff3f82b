"""The `modelforge` command. Imports stay light: torch loads only in worker processes.

  modelforge train CONFIG [--set key=value ...] [--preset NAME]   one job, with a progress bar
                                                  (fields given as lists: a sweep, run by run)
  modelforge export-adapter RUN_ID [--out DIR]                   the adapter + model card
  modelforge export RUN [--gguf TYPE] [--dtype --out --push-to-hub]  the merged model, GGUF
  modelforge demo-model [DIR] [--config FILE]                    the offline demo model
  modelforge run [--host --port --token --data-dir]              the dashboard and REST API
  modelforge doctor                                              the environment report
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from trainers.config import (PRESETS, build_config, load_config_file, parse_cli_value,
                             preset_note, with_absolute_paths)
from trainers.errors import ConfigError, ModelForgeError
from trainers.runs.sweep import sweep_axes


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return args.func(args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="modelforge", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command")

    train = sub.add_parser("train", help="run one training job from a JSON or YAML config")
    train.add_argument("config", nargs="?", help="config file (.json, .yaml or .yml)")
    train.add_argument("--resume", metavar="RUN_ID",
                       help="continue a stopped, failed or interrupted run from its last "
                            "checkpoint, as a new run (instead of CONFIG; --set may change "
                            "max_steps and the other fields a resume allows)")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a field (value read as JSON when it parses), repeatable")
    train.add_argument("--preset", choices=sorted(PRESETS), help="start from a preset")
    train.add_argument("--data-dir", type=Path, help="where runs are stored (default: "
                                                     "MODELFORGE_HOME or ~/.local/share/modelforge)")
    train.set_defaults(func=cmd_train)

    export = sub.add_parser("export-adapter", help="write a run's adapter as a Hugging "
                                                   "Face-ready folder with a model card")
    export.add_argument("run_id")
    export.add_argument("--out", type=Path, help="a new or empty folder (default "
                                                 "RUN_DIR/hf_adapter)")
    export.add_argument("--data-dir", type=Path, help="where runs are stored")
    export.set_defaults(func=cmd_export_adapter)

    demo = sub.add_parser("demo-model", help="write the small demo model (pre-trained on the "
                                             "bundled data on first use, then cached)")
    demo.add_argument("out_dir", type=Path, nargs="?",
                      help="where to write it (default: DATA_DIR/models/demo, the folder "
                           "`modelforge run --demo` uses: under the server's allowed roots, so "
                           "the Playground can load the runs trained on it)")
    demo.add_argument("--config", type=Path, metavar="FILE",
                      help="also write an example training config for it to FILE (.json/.yaml)")
    demo.add_argument("--data-dir", type=Path, help="the data directory (default: "
                                                    "MODELFORGE_HOME or ~/.local/share/modelforge)")
    demo.set_defaults(func=cmd_demo_model)

    from modelforge_ui.cli_commands import add_server_commands

    add_server_commands(sub)  # run, doctor
    from modelforge_ui.cli_bench import add_bench_command

    add_bench_command(sub)  # bench
    from modelforge_ui.cli_export import add_export_command

    add_export_command(sub)  # export
    return parser


# --- train -------------------------------------------------------------------------------

def _parse_overrides(pairs: list[str]) -> dict:
    overrides = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError([{"field": "--set", "message": f"'{pair}' is not KEY=VALUE, "
                                                             "e.g. --set lora_r=32"}])
        key, value = pair.split("=", 1)
        overrides[key.strip()] = parse_cli_value(value)
    return overrides


def cmd_train(args) -> int:
    from trainers.runs.process import default_data_dir

    if bool(args.config) == bool(args.resume):
        print("error: give a CONFIG file, or --resume RUN_ID (not both)", file=sys.stderr)
        return 2
    data_dir = args.data_dir or default_data_dir()
    from trainers.runs.registry import RunRegistry

    try:
        registry = RunRegistry(data_dir)
        if args.resume:
            cfg = _resume_config(registry, args)
        else:
            raw = load_config_file(args.config)
            overrides = _parse_overrides(args.set)  # explicit: they beat the preset
            raw.update(overrides)
            if sweep_axes(raw):
                return train_sweep(registry, with_absolute_paths(raw), args.preset)
            try:
                cfg = build_config(with_absolute_paths(raw), preset=args.preset, keep=overrides)
            except ConfigError as exc:  # the data path's problem beside them, as the API says
                named = {p["field"] for p in exc.problems}
                raise ConfigError(exc.problems + ([] if "dataset" in named
                                                  else missing_dataset(raw.get("dataset")))) \
                    from None
            if preset_note(raw, args.preset, keep=overrides):
                print(f"note: {preset_note(raw, args.preset, keep=overrides)}", file=sys.stderr)
    except ModelForgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from trainers.runs.manager import check_fits, visible_gpus
    from trainers.runs.preflight import check_gpu_only

    devices = visible_gpus() or ["cpu"]
    _warn_if_served(registry, devices)
    try:
        check_fits(cfg, devices)
        check_gpu_only(cfg, devices)
        if missing_dataset(cfg.dataset):  # refused here, not as a failed run record
            raise ConfigError(missing_dataset(cfg.dataset))
        run = registry.create(cfg, source="cli")
    except ModelForgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"run {run['id']}: {run['run_dir']}")
    return follow_run(registry, run["id"])


def missing_dataset(value) -> list[dict]:
    """The problem of a `dataset` that names a local file that is not there, or [] (a hub id
    is read by the worker)."""
    from trainers.data import _looks_like_hub_id

    if not isinstance(value, str) or not value or Path(value).exists() \
            or _looks_like_hub_id(value):
        return []
    return [{"field": "dataset", "message": f"file {value} does not exist: check the path (a "
                                            "relative one is read from the current directory)"}]


def _warn_if_served(registry, devices: list[str]) -> None:
    from trainers.runs.manager import server_using

    if server_using(registry.data_dir):
        print(f"warning: a ModelForge server uses {registry.data_dir}; this run starts now, "
              "outside its queue, and may compete with its jobs for "
              f"{'the GPU' if devices != ['cpu'] else 'the CPU'} (submit it to the server with "
              "POST /api/start_training to queue it)", file=sys.stderr)


def train_sweep(registry, raw: dict, preset: str | None) -> int:
    """A config with fields given as lists: every run validated and recorded first, then run
    one after another here; a stopped run stops the rest."""
    from trainers.runs.manager import visible_gpus
    from trainers.runs.sweep import build_sweep, check_machine, record_sweep

    runs = build_sweep(raw, preset)
    devices = visible_gpus() or ["cpu"]
    check_machine(runs, devices)
    _warn_if_served(registry, devices)
    sweep = record_sweep(registry.data_dir, runs,
                         [registry.create(cfg, source="cli") for _, cfg in runs])
    print(f"sweep {sweep['id']}: {len(runs)} runs over " +
          ", ".join(f"{k} {v}" for k, v in sweep["axes"].items()))
    for record in sweep["runs"]:
        print(f"\nrun {record['id']} ({record['name']}): {record['run_dir']}")
        follow_run(registry, record["id"])
        if registry.get(record["id"])["status"] == "stopped":
            break
    for record in sweep["runs"]:
        if registry.get(record["id"])["status"] == "queued":
            registry.set_status(record["id"], "stopped", {
                "error_type": "stopped", "message": "An earlier run of its sweep was stopped."})
    outcomes = [(r["name"], registry.get(r["id"])["status"]) for r in sweep["runs"]]
    print("\n" + "\n".join(f"  {status:<11} {name}" for name, status in outcomes))
    print(f"compare them: the Runs tab's Compare (sweep {sweep['id']}), or GET "
          f"/api/compare?ids={','.join(sweep['run_ids'])}")
    return 0 if all(status == "succeeded" for _, status in outcomes) else 1


def _resume_config(registry, args):
    """`--resume RUN_ID`: that run's config, linked to it, with the --set overrides."""
    from trainers.runs import resume

    if args.preset:
        raise ConfigError([{"field": "--preset", "message": "cannot change a resumed run's "
                                                            "recipe: leave --preset out"}])
    try:
        old = registry.get(args.resume)
    except KeyError:
        raise ConfigError([{"field": "--resume", "message": (
            f"no run with id {args.resume!r} in {registry.data_dir}: see the Runs tab or "
            "GET /api/runs (or pass --data-dir)")}]) from None
    resume.check_resumable(old)
    return build_config(with_absolute_paths(resume.resume_config(old,
                                                                 _parse_overrides(args.set))))


def follow_run(registry, run_id: str) -> int:
    """Start the worker, show progress until it ends, stop it gracefully on Ctrl-C."""
    from trainers.runs.jobs import follow

    record = follow(registry, run_id, _print_event, lambda: print(
        "\nstopping at the next step (Ctrl-C again to force)...", file=sys.stderr))
    return _report(record, Path(record["run_dir"]))


def _report(record: dict, run_dir: Path) -> int:
    from trainers.runs.jobs import ADAPTER_STATUSES, adapter_path
    from trainers.runs.process import log_tail

    status = record["status"]
    summary = record.get("summary") or {}
    if status in ADAPTER_STATUSES:
        at = f" at step {summary['steps']}" if status == "stopped" and summary.get("steps") \
            else ""
        print(f"\n{status}{at}: adapter saved in {adapter_path(record)}")
        return 0
    print(f"\nfailed: {summary.get('message') or record.get('error')}", file=sys.stderr)
    if summary.get("hint"):
        print(f"fix: {summary['hint']}", file=sys.stderr)
    for remedy in summary.get("remedies") or []:
        print(f"  - {remedy}", file=sys.stderr)
    if summary.get("error_type") == "internal":
        print("\n--- end of train.log ---\n" + log_tail(run_dir, 3000), file=sys.stderr)
    return 1


def _print_event(event: dict) -> None:
    kind = event["type"]
    if kind == "started":
        print(f"started: {event.get('provider')} on {event.get('device_name')} "
              f"({event.get('device')}), {event.get('architecture')}, "
              f"max_seq_length {event.get('max_seq_length')}, {event.get('num_train')} examples")
        for warning in event.get("warnings") or []:
            print(f"warning: {warning}")
        for decision in event.get("speed_mode") or []:
            print(f"speed mode: {decision}")
    elif kind == "progress":
        _progress_bar(event)
    elif kind == "eval":
        ppl = event.get("eval_perplexity")
        print(f"\neval at step {event.get('step')}: loss {event.get('eval_loss')}" +
              (f", perplexity {ppl}" if ppl is not None else ""))
    elif kind == "stage":
        print(f"\nstage: {event.get('name')}" +
              (f": {event['message']}" if event.get("message") else ""))
    elif kind == "saved" and event.get("kind") == "adapter":
        print(f"\nsaved adapter: {event.get('path')}")


def _progress_bar(event: dict) -> None:
    step, total = event.get("step") or 0, event.get("total_steps") or 0
    if not sys.stdout.isatty() and step not in (1, total) and step % max(1, total // 10):
        return  # a log file gets ~10 lines, a terminal a live bar
    width = 30
    filled = int(width * step / total) if total else 0
    loss = event.get("loss")
    loss_text = f"{loss:.4f}" if isinstance(loss, (int, float)) else "-"
    eta = event.get("eta_s")
    line = (f"\r[{'#' * filled}{'.' * (width - filled)}] {step}/{total} loss {loss_text} "
            f"{event.get('tokens_per_s') or 0:.0f} tok/s eta {eta if eta is not None else '-'}s")
    print(line, end="" if sys.stdout.isatty() else "\n", flush=True)


# --- export ----------------------------------------------------------------------------------

def cmd_export_adapter(args) -> int:
    """The adapter folder with its model card (trainers/tools/model_card.py); no network."""
    from trainers.runs.process import default_data_dir
    from trainers.runs.registry import RunRegistry
    from trainers.tools.model_card import export_adapter

    try:
        registry = RunRegistry(args.data_dir or default_data_dir())
        run = registry.get(args.run_id)
        out = export_adapter(run["run_dir"], args.out, run["name"])
    except KeyError:
        print(f"error: no run with id {args.run_id!r}", file=sys.stderr)
        return 2
    except (ModelForgeError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"adapter folder with model card: {out}\nupload it with `hf upload "
          f"USER/REPO {out}` (needs a network and a Hub token)")
    return 0


# --- demo model ----------------------------------------------------------------------------

def cmd_demo_model(args) -> int:
    from trainers.runs.process import default_data_dir
    from trainers.tools.demo import demo_config

    data_dir = getattr(args, "data_dir", None) or default_data_dir()
    out = args.out_dir or data_dir / "models" / "demo"
    if args.out_dir is None and (out / "config.json").is_file():
        print(f"demo model already in {out}")  # the server's own demo folder: kept
    else:
        _write_demo_model(out)
    example = demo_config(out.resolve())
    text = json.dumps(example, indent=2)
    if getattr(args, "config", None):
        from trainers.config import build_config, save_config

        save_config(build_config(example), args.config)
        print(f"example config written to {args.config}")
    else:
        print(f"example config:\n{text}")
    return 0


def _write_demo_model(out: Path) -> None:
    from trainers.tools.demo import needs_pretraining, pretraining_notice, write_demo_model

    if needs_pretraining():
        print(pretraining_notice(), flush=True)
    write_demo_model(out)
    print(f"demo model written to {out}")


if __name__ == "__main__":
    sys.exit(main())
