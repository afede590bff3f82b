"""`modelforge bench`: a matched Hugging Face-vs-Unsloth benchmark, from a spec file or flags.

  modelforge bench spec.json
  modelforge bench --model llama-3.2-1b --synthetic-weights true --repeats 2
  modelforge bench spec.yaml --modes lora16 --steps 50 --out results/

Every field of BenchmarkSpec is a flag (lists as a,b or JSON). The benchmark is recorded in the
run history like a training run (kind "benchmark"); its results are RUN_DIR/results.{json,md,csv}.
"""

from __future__ import annotations

import json
import shlex
import shutil
import sys
import typing
from pathlib import Path

from trainers.benchmark.spec import (GPU_ONLY_MODES, BenchmarkSpec, build_spec,
                                     default_modes)
from trainers.config import load_config_file, parse_cli_value, with_absolute_paths
from trainers.errors import ModelForgeError

HIDDEN_FIELDS = ("invocation",)


def add_bench_command(subparsers) -> None:
    bench = subparsers.add_parser(
        "bench", help="benchmark Hugging Face against Unsloth (matched runs)",
        description=__doc__.split("\n\n")[0])
    bench.add_argument("spec", nargs="?", help="spec file (.json, .yaml); flags override it")
    for name, field in BenchmarkSpec.model_fields.items():
        if name in HIDDEN_FIELDS:
            continue
        default = "required" if field.is_required() else f"default {field.default!r}"
        bench.add_argument("--" + name.replace("_", "-"), dest="field_" + name, metavar="VALUE",
                           help=f"{field.description} ({default})".replace("%", "%%"))
    bench.add_argument("--data-dir", type=Path,
                       help="where runs are stored (default: MODELFORGE_HOME or "
                            "~/.local/share/modelforge)")
    bench.add_argument("--out", type=Path, help="also copy results.json, .md and .csv here")
    bench.set_defaults(func=cmd_bench)


def parse_flag(name: str, text: str):
    """A flag's text as the field's value: a list field takes a,b (or JSON, or "auto"), a
    text field the text as it is (a model named 1e5 stays a name), any other field JSON."""
    annotation = BenchmarkSpec.model_fields[name].annotation
    if _takes_list(annotation) and text != "auto" and not text.startswith("["):
        return [part.strip() for part in text.split(",") if part.strip()]
    if annotation is str:
        return text
    return parse_cli_value(text)


def _takes_list(annotation) -> bool:
    kinds = [annotation, *typing.get_args(annotation)]
    return any(typing.get_origin(kind) is list for kind in kinds)


def spec_from_args(args) -> BenchmarkSpec:
    raw = load_config_file(args.spec) if args.spec else {}
    words = ["modelforge", "bench"] + ([str(args.spec)] if args.spec else [])
    for name in BenchmarkSpec.model_fields:
        text = getattr(args, "field_" + name, None)
        if text is not None:
            raw[name] = parse_flag(name, text)
            words += ["--" + name.replace("_", "-"), text]
    raw["invocation"] = shlex.join(words)
    if "modes" not in raw:
        raw["modes"] = machine_modes()
    return build_spec(with_absolute_paths(raw, BenchmarkSpec))


def machine_modes() -> list[str]:
    """The default modes this machine can run; a GPU-only one left out is said."""
    from trainers.runs.manager import visible_gpus

    modes = default_modes(has_gpu=bool(visible_gpus()))
    left_out = [m for m in BenchmarkSpec.model_fields["modes"].default if m not in modes]
    if left_out:
        print(f"modes: {', '.join(modes)} ({', '.join(left_out)}: "
              f"{'; '.join(GPU_ONLY_MODES[m] for m in left_out)}, and this machine has none)")
    return modes


def cmd_bench(args) -> int:
    from trainers.runs.jobs import create_benchmark, follow
    from trainers.runs.process import default_data_dir
    from trainers.runs.registry import RunRegistry

    try:
        spec = spec_from_args(args)
    except ModelForgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    registry = RunRegistry(args.data_dir or default_data_dir())
    run = create_benchmark(registry, spec, source="cli")
    run_dir = Path(run["run_dir"])
    print(f"benchmark {run['id']}: {run_dir}")
    record = follow(registry, run["id"], print_event, lambda: print(
        "\nstopping after the current variant (Ctrl-C again to force)...", file=sys.stderr))
    return report_outcome(record, run_dir, args.out)


def print_event(event: dict) -> None:
    kind = event["type"]
    if kind == "stage":
        print(event.get("message") or event.get("name"))
    elif kind == "variant_started":
        print(f"[{event['index']}/{event['total']}] {event['variant']} ...")
    elif kind == "progress" and event.get("variant"):
        loss = event.get("loss")
        live = sys.stdout.isatty()  # a terminal redraws one line; a log file gets one a step
        print(("\r" if live else "") + f"  step {event['step']}/{event['total_steps']} loss "
              f"{'-' if loss is None else f'{loss:.4f}'}   ", end="" if live else "\n",
              flush=True)
    elif kind == "variant_finished":
        vram, loss = event.get("max_allocated_gib"), event.get("first_step_loss")
        print(f"\r  {event['name']}: {event['tokens_per_s']:,.0f} tokens/s, median step "
              f"{event['median_step_s']:.3f} s, peak "
              f"{'-' if vram is None else f'{vram:.2f} GiB'}, first-step loss "
              f"{'-' if loss is None else f'{loss:.4f}'}")
    elif kind == "variant_failed":
        print(f"\r  {event['name']} FAILED: {event.get('message')}")
        if event.get("hint"):
            print(f"    fix: {event['hint']}")


def report_outcome(record: dict, run_dir: Path, out: Path | None) -> int:
    summary = record.get("summary") or {}
    if record["status"] == "failed":
        print(f"\nbenchmark failed: {summary.get('message')}", file=sys.stderr)
        if summary.get("hint"):
            print(f"fix: {summary['hint']}", file=sys.stderr)
        return 1
    results_md = run_dir / "results.md"
    if results_md.exists():
        blocks = results_md.read_text().split("\n\n")
        print("\n" + next((b for b in blocks if b.startswith("| provider")), ""))
    from modelforge_ui.benchmark_view import verdict_markdown  # pandas: only here

    summary = _results(run_dir)
    print("\n" + plain_text(verdict_markdown(summary, record["status"])))
    failed = [f"{r.get('provider')} {r.get('mode')}" for r in (summary or {}).get("table", [])
              if r.get("status") == "failed"]
    outcome = f"{len(failed)} variant(s) FAILED ({', '.join(failed)})" if failed \
        else record["status"]
    print(f"\n{outcome}: results in {run_dir}/results.json, results.md, results.csv")
    if out:
        out.mkdir(parents=True, exist_ok=True)
        for name in ("results.json", "results.md", "results.csv"):
            if (run_dir / name).exists():
                shutil.copy2(run_dir / name, out / name)
        print(f"copied to {out}")
    return 1 if failed or summary is None else 0


def _results(run_dir: Path) -> dict | None:
    path = run_dir / "results.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def plain_text(markdown: str) -> str:
    """The Benchmark tab's verdict (modelforge_ui/benchmark_view.py) for a terminal."""
    return markdown.replace("**", "").replace("### ", "")
