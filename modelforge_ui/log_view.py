"""The log tail a person reads beside a running job: the newest lines of train.log, without
progress-bar redraws and library warnings (both stay in train.log, which the Runs tab and
GET /api/runs/{id}/log show whole). No Gradio here: a plain function a test can call.
"""

from __future__ import annotations

import math
import re

# A tqdm bar: "Loading weights:  45%|####5     | 9/20 [00:00<00:00, 5790.84it/s]"
_PROGRESS_BAR = re.compile(r"\d+%\|.*\||\d+/\d+ \[[\d:<>?, .]*(it/s|s/it|examples/s)?")
# Python warnings ("file.py:12: FutureWarning: ...") and torch's glog lines ("W1201 10:35:46...")
_WARNING = re.compile(r"^\S+:\d+: \w*Warning: |^[WI]\d{4} \d\d:\d\d:\d\d\.\d+ |"
                      r"^\s*warnings\.warn\(|^\w*Warning: |deprecated", re.IGNORECASE)


def clean_tail(text: str, lines: int = 14, truncated: bool = True, width: int = 0) -> str:
    """The newest lines worth reading, newest last, that fill at most `lines` rows of a box
    `width` characters wide (0: one row a line), so the box never needs scrolling and the
    newest line is always in view. `truncated`: `text` was cut from a longer log, so its first
    line may be a fragment and is dropped."""
    rows = text.split("\n")
    if truncated and len(rows) > 1:
        rows = rows[1:]
    kept: list[str] = []
    hidden = 0
    after_warning = False
    for row in rows:
        row = row.split("\r")[-1].rstrip()  # a bar redrawn with \r: its last state only
        if not row.strip():
            continue
        if after_warning and row.startswith((" ", "\t")):
            continue  # the source line Python prints under a warning
        after_warning = bool(_WARNING.search(row))
        if after_warning:
            hidden += 1
            continue
        if _PROGRESS_BAR.search(row):
            continue
        kept.append(row)
    note = [f"({hidden} library warning{'s' if hidden != 1 else ''} hidden here; all of them "
            "are in train.log)"] if hidden else []
    budget = lines - len(note)
    shown: list[str] = []
    for row in reversed(kept):  # newest first, until the box's rows are used up
        need = max(1, math.ceil(len(row) / width)) if width else 1
        if shown and need > budget:
            break
        shown.insert(0, row if need <= budget else row[-budget * width:])
        budget -= need
        if budget <= 0:
            break
    return "\n".join(note + shown)
