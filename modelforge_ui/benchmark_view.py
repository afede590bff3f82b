"""What the Benchmark tab shows of a results.json: the verdict first, then a compact table with
the columns that answer the question (tokens/s, speedup, VRAM saved, matched) first.

Read defensively: results.json files of other versions lack keys, and a key of the wrong type
shows as "-". The headline speed is tokens/s over the whole measured time, the median step's
beside it. Three schemas exist: today's rows have `tokens_per_s` (whole time) and
`tokens_per_s_median`; rows of 2026-12-01 have `tokens_per_s` (median) and `tokens_per_s_total`;
older ones only `tokens_per_s` (median). No Gradio here: plain functions of the data.
"""

from __future__ import annotations

import pandas as pd

from modelforge_ui.views import number

BASELINE = "huggingface"
PROVIDER_NAMES = {"huggingface": "Hugging Face", "unsloth": "Unsloth"}
MODE_NAMES = {"lora16": "16-bit LoRA", "qlora4": "QLoRA 4-bit"}
REASON_CHARS = 48  # a failure's reason in the table; the verdict and the status say it whole
# Peak VRAM in GiB is in the bar plot beside the table; runs ok/planned is in the status.
COLUMNS = ["variant", "tokens/s", "speedup", "VRAM saved", "matched", "MFU", "status"]
COLUMN_WIDTHS = ["19%", "21%", "11%", "11%", "12%", "8%", "18%"]


def provider_name(provider) -> str:
    return PROVIDER_NAMES.get(str(provider), str(provider))


def mode_name(mode) -> str:
    return MODE_NAMES.get(str(mode), str(mode))


def _rows(summary: dict | None) -> list[dict]:
    rows = (summary or {}).get("table")
    return [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []


def speed_keys(summary: dict | None) -> tuple[str, str | None]:
    """(headline key, median-step key or None): the headline is tokens/s over the whole
    measured time when the file has it, else the median step's (and no median beside it)."""
    rows = _rows(summary)
    if any(number(r.get("tokens_per_s_median")) for r in rows):
        return "tokens_per_s", "tokens_per_s_median"
    if any(number(r.get("tokens_per_s_total")) for r in rows):
        return "tokens_per_s_total", "tokens_per_s"
    return "tokens_per_s", None


def speed_key(summary: dict | None) -> str:
    return speed_keys(summary)[0]


def speed_label(summary: dict | None) -> str:
    label = "whole measured time" if speed_keys(summary)[1] else "median step"
    if (summary or {}).get("representative") is False:
        label += "; CPU: not GPU speed"
    return f"tokens/s ({label})"


def _baseline(rows: list[dict], mode) -> dict | None:
    return next((r for r in rows if r.get("provider") == BASELINE and r.get("mode") == mode
                 and number(r.get("tokens_per_s"))), None)


def speedup(row: dict, base: dict | None, key: str) -> float | None:
    """The row's headline tokens/s over the baseline's of the same mode."""
    if base is None:
        return None
    a, b = number(row.get(key)), number(base.get(key))
    if a and b:
        return a / b
    return number(row.get("speedup")) if key == "tokens_per_s" else None


def vram_saved(row: dict, base: dict | None) -> float | None:
    """Percent less peak VRAM than the baseline (negative: more)."""
    if base is None:
        return None
    a, b = number(row.get("peak_allocated_gib")), number(base.get("peak_allocated_gib"))
    if a is not None and b:
        return 100 * (1 - a / b)
    return number(row.get("vram_reduction_pct"))


def _fmt(value, pattern: str, empty: str = "-") -> str:
    value = number(value)
    return empty if value is None else pattern.format(value)


def _times(factor: float | None) -> str:
    """2.15 -> "2.15x faster", 0.25 -> "4.00x slower"."""
    if not factor:
        return "speed unknown"
    return f"{factor:.2f}x faster" if factor >= 1 else f"{1 / factor:.2f}x slower"


def _short(text, limit: int = REASON_CHARS) -> str:
    text = " ".join(str(text or "").split())
    return text if len(text) <= limit else text[:limit - 1].rstrip() + "…"


def _repeats(summary: dict) -> int | None:
    spec = summary.get("spec") if isinstance(summary.get("spec"), dict) else {}
    return number(spec.get("repeats"))


def _matched_words(value) -> str:
    value = str(value or "not checked")
    return value if value != "matched" else "matched"


def verdict_markdown(summary: dict | None, status: str | None = None) -> str:
    """One line a mode: who is faster and by how much, the memory saved, whether the runs were
    matched, with MFU and the number of repeats; then what limits the numbers."""
    if not summary:
        if status in ("queued", "running"):
            return "**Verdict:** when the first variants finish."
        return ""
    rows = _rows(summary)
    key, median_key = speed_keys(summary)
    lines = []
    modes = list(dict.fromkeys(r.get("mode") for r in rows))
    repeats = _repeats(summary)
    for mode in modes:
        in_mode = [r for r in rows if r.get("mode") == mode]
        base = next((r for r in in_mode if r.get("provider") == BASELINE), None)
        others = [r for r in in_mode if r.get("provider") != BASELINE]
        lines.append(_mode_verdict(mode, base, others, key, repeats, median_key))
    if not lines:
        return "**Verdict:** no results yet."
    notes = []
    if summary.get("complete") is False:
        notes.append(f"partial: {summary.get('runs_done', '?')} of "
                     f"{summary.get('planned_runs', '?')} runs done so far")
    if summary.get("representative") is False:
        notes.append("**not representative of GPU speed**: "
                     + str(summary.get("representative_reason") or "measured on the CPU"))
    checks = summary.get("checks") if isinstance(summary.get("checks"), list) else []
    failed = [c for c in checks if isinstance(c, dict) and c.get("required", True)
              and c.get("ok") is False and c.get("check") != "representative of GPU speed"]
    if failed:
        notes.append("checks not passed: " + "; ".join(
            f"{c.get('check')} ({_short(c.get('detail'), 120)})" for c in failed))
    speed = ("tokens/s over the whole measured time, the median step's in brackets"
             if speed_keys(summary)[1] else "tokens/s of the median step")
    text = "\n".join(f"- {line}" for line in lines)
    text += f"\n\nSpeeds are {speed}, after the warm-up steps."
    if notes:
        text += "\n\n" + "\n".join(f"- {n}" for n in notes)
    return "### Verdict\n\n" + text


def _mode_verdict(mode, base: dict | None, others: list[dict], key: str, repeats,
                  median_key: str | None = None) -> str:
    label = mode_name(mode)
    ok = lambda r: r is not None and r.get("status") != "failed" and number(r.get(key))  # noqa: E731
    each = f" · {repeats} repeats each" if repeats and repeats > 1 else \
        (" · 1 run each" if repeats == 1 else "")
    if not ok(base):
        why = f": {_short((base or {}).get('reason'), 160)}" if base else " (not in this benchmark)"
        named = [f"{provider_name(r.get('provider'))} {_fmt(r.get(key), '{:,.0f}')} tokens/s"
                 for r in others if ok(r)]
        return (f"**{label}: no {provider_name(BASELINE)} baseline**{why}"
                + (f" · {', '.join(named)}" if named else ""))
    parts = []
    for row in others:
        who = provider_name(row.get("provider"))
        if not ok(row):
            parts.append(f"**{label}: {who} failed** ({_short(row.get('reason'), 160)}); "
                         f"{provider_name(BASELINE)} {_fmt(base.get(key), '{:,.0f}')} tokens/s")
            continue
        factor = speedup(row, base, key)
        saved = vram_saved(row, base)
        memory = ("peak VRAM not measured (no GPU)" if saved is None else
                  f"{abs(saved):.0f}% {'less' if saved >= 0 else 'more'} peak VRAM")
        matched = _matched_words(row.get("matched"))
        median = ""
        if median_key:
            m = speedup(row, base, median_key)
            median = f" ({_times(m)} by median step)" if m else ""
        mfu = ""
        if number(row.get("mfu")) is not None or number(base.get("mfu")) is not None:
            mfu = (f" · MFU {_fmt(number(row.get('mfu')) and 100 * row['mfu'], '{:.1f}%')} vs "
                   f"{_fmt(number(base.get('mfu')) and 100 * base['mfu'], '{:.1f}%')}")
        parts.append(
            f"**{label}: {who} {_times(factor)}{median}, {memory}, {matched}** "
            f"· {_fmt(row.get(key), '{:,.0f}')} vs {_fmt(base.get(key), '{:,.0f}')} tokens/s"
            f"{mfu}{each}")
    if not parts:
        return (f"**{label}: {provider_name(BASELINE)} only**, "
                f"{_fmt(base.get(key), '{:,.0f}')} tokens/s{each}")
    return "\n- ".join(parts)


def compact_table(summary: dict | None) -> pd.DataFrame:
    """One row per provider x mode, the answer's columns first; a failure's reason is cut to
    REASON_CHARS so it cannot widen the table."""
    rows = _rows(summary)
    key, median_key = speed_keys(summary)
    out = []
    for row in rows:
        base = _baseline(rows, row.get("mode"))
        failed = row.get("status") == "failed"
        spread = ""
        if not failed and (number(row.get("runs_ok")) or 0) > 1 and key == "tokens_per_s":
            spread = (f" ({_fmt(row.get('tokens_per_s_low'), '{:,.0f}')}-"
                      f"{_fmt(row.get('tokens_per_s_high'), '{:,.0f}')})")
        speed = _fmt(row.get(key), "{:,.0f}")
        if median_key and number(row.get(median_key)):
            speed += f" (median {_fmt(row.get(median_key), '{:,.0f}')})"
        is_base = row.get("provider") == BASELINE
        status = str(row.get("status") or "-")
        if number(row.get("runs")) and row.get("runs") > 1 or status != "ok":
            status += f" {row.get('runs_ok', '?')}/{row.get('runs', '?')}"
        if row.get("reason"):
            status += f": {_short(row.get('reason'))}"
        out.append([
            f"{provider_name(row.get('provider'))} · {mode_name(row.get('mode'))}",
            "-" if failed else speed + spread,
            "base" if is_base and not failed else _fmt(speedup(row, base, key), "{:.2f}x"),
            "base" if is_base and not failed else _fmt(vram_saved(row, base), "{:.1f}%"),
            str(row.get("matched") or "-"),
            _fmt(number(row.get("mfu")) and 100 * row["mfu"], "{:.1f}%"),
            status,
        ])
    header = [speed_label(summary) if c == "tokens/s" else c for c in COLUMNS]
    return pd.DataFrame(out, columns=header)


def empty_table() -> pd.DataFrame:
    return pd.DataFrame(columns=COLUMNS)
