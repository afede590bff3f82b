"""What the dashboard shows, computed from run records and events (no Gradio, no torch here).

Kept apart from the tabs so each view is a plain function of its data that a test can call.
"""

from __future__ import annotations

import math
import time

import pandas as pd

from trainers.runs.jobs import adapter_path

HISTORY_COLUMNS = ["id", "name", "status", "provider", "model", "strategy", "duration",
                   "tokens/s", "peak VRAM (GiB)"]
PLOT_COLUMNS = {"loss": "loss", "tokens_per_s": "tokens/s",
                "gpu_mem_allocated_gib": "memory (GiB)", "process_rss_gib": "memory (GiB)"}


def number(value) -> int | float | None:
    """A recorded field as a number, or None when missing or of another type: events.jsonl may
    be edited by hand or written by another version, and one bad field must not break a view."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value if isinstance(value, float) or abs(value) < 2**63 else None  # int64, a float


def fmt_duration(seconds) -> str:
    seconds = number(seconds)
    if seconds is None or not math.isfinite(seconds):
        return "-"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def fmt_number(value, digits: int = 1) -> str:
    value = number(value)
    return "-" if value is None else f"{value:,.{digits}f}"


def run_duration(run: dict) -> float | None:
    if not run.get("started_at"):
        return None
    return (run.get("finished_at") or time.time()) - run["started_at"]


def model_label(config: dict) -> str:
    return str(config.get("model_name", "")).rstrip("/").rsplit("/", 1)[-1]


def history_table(runs: list[dict]) -> pd.DataFrame:
    rows = []
    for run in runs:
        cfg, summary = run["config"], run.get("summary") or {}
        rows.append([run["id"], run["name"], run["status"], cfg.get("provider", "-"),
                     model_label(cfg), cfg.get("strategy", run["kind"]),
                     fmt_duration(run_duration(run)), fmt_number(summary.get("tokens_per_s")),
                     fmt_number(summary.get("peak_gpu_mem_allocated_gib"), 2)])
    return pd.DataFrame(rows, columns=HISTORY_COLUMNS)


def run_choices(runs: list[dict], statuses: tuple[str, ...] | None = None,
                kind: str | None = "train") -> list[tuple[str, str]]:
    """(label, run id) pairs for a dropdown, newest first."""
    return [(f"{r['name']} · {r['status']} · {r['id']}", r["id"]) for r in runs
            if (statuses is None or r["status"] in statuses)
            and (kind is None or r["kind"] == kind)]


def progress_markdown(run: dict | None) -> str:
    """Status, step of total, elapsed and ETA of a run from RunManager.get()."""
    if run is None:
        return "No run yet: fill the form and press **Start**."
    head = f"**{run['name']}** (`{run['id']}`): **{run['status']}**"
    if run["status"] == "queued":
        return head + f" - position {run.get('queue_position') or '?'} in the queue"
    progress = run.get("progress") or {}
    summary = run.get("summary") or {}
    lines = [head]
    started = run.get("started_event") or {}
    if started:
        lines.append(f"{started.get('provider', '')} on {started.get('device_name') or '?'} "
                     f"({started.get('device', '?')}) · max_seq_length "
                     f"{started.get('max_seq_length')} · {started.get('num_train')} "
                     "training examples")
    if progress:
        step, total = number(progress.get("step")) or 0, number(progress.get("total_steps")) or 0
        pct = f" ({100 * step / total:.0f}%)" if total else ""
        eta = ""  # only while running: an ended run has none to give
        if run["status"] == "running":
            left = fmt_duration(progress.get("eta_s"))
            eta = f" · ETA {'unknown' if left == '-' else left}"
        lines.append(f"step **{step} / {total}**{pct} · elapsed "
                     f"{fmt_duration(progress.get('elapsed_s'))}{eta}"
                     f" · loss {fmt_number(progress.get('loss'), 4)}"
                     f" · {fmt_number(progress.get('tokens_per_s'))} tokens/s "
                     f"({_interval(run)})"
                     + (mfu_text(progress.get("mfu"), started) or mfu_missing(started)))
    elif run["status"] == "running":
        lines.append("loading the model and data...")
    if eval_line(run):
        lines.append(eval_line(run))
    lines += [f"**Warning:** {w}" for w in run_warnings(run)]
    if started.get("speed_mode"):
        lines.append("Speed mode: " + "; ".join(map(str, started["speed_mode"])))
    if run["status"] == "succeeded":
        lines.append(f"train loss {fmt_number(summary.get('train_loss'), 4)} · "
                     f"{fmt_number(summary.get('tokens_per_s'))} tokens/s (whole run)"
                     f"{mfu_text(summary.get('mfu'), started)} · "
                     f"adapter in `{adapter_path(run)}`")
    elif run["status"] == "stopped" and summary.get("adapter_dir"):
        lines.append(stopped_line(run))
    elif run["status"] in ("failed", "stopped", "interrupted"):
        lines.append(f"{summary.get('message', '')}")
        if summary.get("hint"):
            lines.append(f"Fix: {summary['hint']}")
        for remedy in summary.get("remedies") or []:
            lines.append(f"- {remedy}")
    return "\n\n".join(lines)


def mfu_text(mfu, started: dict) -> str:
    """' · MFU 31.2% of 989 TFLOP/s (NVIDIA H200 bf16 dense)', or '' without a peak: a CPU
    run shows an MFU only when a peak was given (MODELFORGE_PEAK_TFLOPS)."""
    peak = number(started.get("peak_tflops"))
    if number(mfu) is None or not peak:
        return ""
    return f" · MFU {100 * mfu:.3g}% of {peak:g} TFLOP/s ({started.get('peak_source')})"


def mfu_missing(started: dict) -> str:
    """Why a GPU run has no MFU (the started event's reason); nothing on a CPU."""
    why = started.get("mfu_unavailable")
    return f" · MFU not counted: {why}" if started.get("device") == "cuda" and why else ""


def _interval(run: dict) -> str:
    """What a progress event's tokens/s covers: the steps since the previous event."""
    every = number((run.get("config") or {}).get("logging_steps")) or 1
    return "last step" if every == 1 else f"last {every} steps"


def run_warnings(run: dict) -> list[str]:
    """What the worker said differs from the config (e.g. Unsloth's CPU backend replacing the
    optimizer), from the started event: shown with the run, so runs compared are not silently
    unlike."""
    found = (run.get("started_event") or {}).get("warnings")
    return [str(w) for w in found if w] if isinstance(found, list) else []


def stopped_line(run: dict) -> str:
    """A run stopped on request still saves its adapter: say where, and at which step."""
    summary = run.get("summary") or {}
    step, total = number(summary.get("steps")), number(summary.get("total_steps"))
    at = f"stopped at step {step}" + (f" of {total}" if total else "") if step is not None \
        else "stopped"
    return (f"{at}; adapter saved in `{summary.get('adapter_dir')}` · train loss "
            f"{fmt_number(summary.get('train_loss'), 4)} · "
            f"{fmt_number(summary.get('tokens_per_s'))} tokens/s (whole run)")


def metric_frames(events: list[dict]) -> dict[str, pd.DataFrame]:
    """One (step, value) frame per plotted metric, from the run's progress events."""
    progress = [e for e in events
                if e.get("type") == "progress" and isinstance(number(e.get("step")), int)]
    frames = {}
    for key, title in PLOT_COLUMNS.items():  # a point whose value is not a number is left out
        points = [(e["step"], e[key]) for e in progress if number(e.get(key)) is not None]
        # Typed columns even when empty: the browser keeps the axis type it first sees.
        frames[key] = pd.DataFrame({"step": pd.Series([p[0] for p in points], dtype="int64"),
                                    title: pd.Series([p[1] for p in points], dtype="float64")})
    return frames


def events_text(events: list[dict], limit: int = 200) -> str:
    """The last `limit` events, one JSON object a line (as in events.jsonl)."""
    import json

    shown = events[-limit:]
    skipped = len(events) - len(shown)
    head = f"... {skipped} earlier events not shown\n" if skipped else ""
    return head + "\n".join(json.dumps(e, default=str) for e in shown)


def diagnosis_markdown(diag: dict) -> str:
    lines = [f"**{diag.get('error_type', 'unknown')}**: {diag.get('message', '')}"]
    if diag.get("hint"):
        lines.append(f"**Fix:** {diag['hint']}")
    for remedy in diag.get("remedies") or []:
        lines.append(f"- {remedy}")
    return "\n\n".join(lines)


def eval_line(run: dict) -> str:
    """The latest evaluation on held-out data, and the best one once the run has ended."""
    latest, summary = run.get("eval") or {}, run.get("summary") or {}
    parts = []
    if number(latest.get("eval_loss")) is not None:
        ppl = number(latest.get("eval_perplexity"))
        parts.append(f"eval loss {fmt_number(latest['eval_loss'], 4)} at step "
                     f"{latest.get('step')}" + (f" (perplexity {fmt_number(ppl, 2)})"
                                                 if ppl is not None else ""))
        margin = number(latest.get("eval_rewards/margins"))
        if margin is not None:
            parts.append(f"eval reward margin {fmt_number(margin, 4)}")
    if number(summary.get("best_eval_loss")) is not None:
        parts.append(f"best eval loss **{fmt_number(summary['best_eval_loss'], 4)}** at step "
                     f"{summary.get('best_eval_step')}")
    return " · ".join(parts)


def loss_curves(events: list[dict]) -> pd.DataFrame | None:
    """Training loss (progress events) and eval loss (eval events) as one frame with a
    `split` column, for one plot with two lines. None, not an empty frame, when there is no
    point yet: a coloured line plot first drawn empty never shows its lines."""
    rows = [(e["step"], e[key], split) for split, kind, key in
            (("train", "progress", "loss"), ("eval", "eval", "eval_loss"))
            for e in events if e.get("type") == kind and isinstance(number(e.get("step")), int)
            and number(e.get(key)) is not None]
    if not rows:
        return None
    return pd.DataFrame({"step": pd.Series([r[0] for r in rows], dtype="int64"),
                         "loss": pd.Series([r[1] for r in rows], dtype="float64"),
                         "split": pd.Series([r[2] for r in rows], dtype="object")})
