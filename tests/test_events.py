"""The event contract: the models in trainers/events.py, the writers, the readers and the docs."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

from trainers.events import (EVENT_MODELS, EVENTS_FILE, Event, EventWriter, parse_event,
                             read_events, terminal_event)

ROOT = Path(__file__).resolve().parent.parent
# where each list of event fields is: docs/events.md (training runs), docs/benchmarking.md (benchmarks)
DOCS = (("docs/events.md", "Every event type and its fields"), ("docs/benchmarking.md", "Output"))
ENVELOPE = "every event"


def documented(path: str, heading: str) -> dict[str, set[str]]:
    """{event type: its documented fields} from the `- `type`, `type`: `field`, ...` items of
    one section; an item may go on over indented lines."""
    section = (ROOT / path).read_text(encoding="utf-8").split(f"\n## {heading}\n", 1)[1]
    section = section.split("\n## ", 1)[0]
    found: dict[str, set[str]] = {}
    for item in re.findall(r"^- (.*(?:\n  .*)*)", section, re.M):
        keys, fields = item.split(":", 1)
        for key in re.findall(r"`([^`]+)`", keys) or [keys.strip()]:
            found.setdefault(key, set()).update(re.findall(r"`([^`]+)`", fields))
    return found


def all_documented() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path, heading in DOCS:
        for key, fields in documented(path, heading).items():
            found.setdefault(key, set()).update(fields)
    return found


def model_fields(type_: str) -> set[str]:
    model = EVENT_MODELS[type_]
    open_prefix = getattr(model, "open_prefix", None)
    return set(model.model_fields) - set(Event.model_fields) | \
        ({open_prefix + "*"} if open_prefix else set())


def test_the_docs_list_exactly_the_fields_of_every_event_type():
    docs = all_documented()
    assert docs.pop(ENVELOPE) == set(Event.model_fields)
    assert set(docs) == set(EVENT_MODELS)
    for type_ in EVENT_MODELS:
        fields = model_fields(type_)
        assert docs[type_] - fields == set(), f"{type_}: documented, not in the model"
        assert fields - docs[type_] == set(), f"{type_}: in the model, not documented"


def test_the_docs_parser_reads_a_list():
    assert documented("docs/events.md", "Every event type and its fields")["saved"] == {"stage", "step", "kind", "path"}
    assert "message" in documented("docs/benchmarking.md", "Output")["variant_failed"]


def test_every_literal_emit_call_names_a_known_type_and_declared_fields():
    """Catches a misspelt field in a writer path no test runs (a GPU, a stop at a stage);
    the fields a writer spreads (**result) are checked when it runs."""
    calls = 0
    for path in (ROOT / "trainers").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "emit" and node.args
                    and isinstance(node.args[0], ast.Constant)):
                continue
            type_ = node.args[0].value
            assert type_ in EVENT_MODELS, f"{path}:{node.lineno}: unknown type {type_!r}"
            named = {k.arg for k in node.keywords if k.arg is not None}
            undeclared = named - set(EVENT_MODELS[type_].model_fields)
            assert not undeclared, f"{path}:{node.lineno}: {type_} {undeclared}"
            calls += 1
    assert calls >= 15  # the writers were found


# --- the writer -------------------------------------------------------------------------------

@pytest.mark.parametrize("type_, fields", [
    ("progres", {"step": 1, "total_steps": 2}),  # unknown type
    ("progress", {"step": 1, "total_steps": 2, "los": 1.0}),  # misspelt field
    ("progress", {"step": "one", "total_steps": 2}),  # wrong type
    ("progress", {"total_steps": 2}),  # a required field missing
    ("saved", {"step": 1, "kind": "weights", "path": "p"}),  # not one of the kinds
    ("eval", {"step": 1, "eval_loss": 1.0, "loss": 2.0}),  # only eval_* metrics are open
    ("failed", {"error_type": "data", "message": "m", "seq": 3}),  # seq is the reader's
])
def test_emit_refuses_what_breaks_the_contract_and_writes_nothing(tmp_path, type_, fields):
    writer = EventWriter(tmp_path)
    with pytest.raises(ValueError):
        writer.emit(type_, **fields)
    writer.close()
    assert (tmp_path / EVENTS_FILE).read_text() == ""


def test_round_trip(tmp_path):
    writer = EventWriter(tmp_path)
    sent = [writer.emit("started", pid=1, strategy="sft", versions={"torch": "2", "trl": None}),
            writer.emit("progress", stage=None, step=1, total_steps=2, loss=1.5, tokens_seen=7,
                        metrics={"rewards/margins": 0.1}),
            writer.emit("eval", stage="dpo", step=1, epoch=0.5, eval_loss=1.0,
                        **{"eval_rewards/chosen": 0.2}),
            writer.emit("finished", adapter_dir=None, steps=2, train_loss=1.2)]
    writer.close()
    got = read_events(tmp_path)
    assert got == [{**event, "seq": i} for i, event in enumerate(sent)]
    assert read_events(tmp_path, after=3) == [got[3]]
    assert terminal_event(got)["type"] == "finished"
    assert {"type", "time"} <= set(sent[0]) and isinstance(sent[0]["time"], float)


# --- the readers ------------------------------------------------------------------------------

def test_read_events_skips_damaged_lines_and_drops_wrongly_typed_fields(tmp_path):
    lines = ["{not json", "[1, 2]", '{"type": 5}', '{"type": ""}', b"\xff\xfe".decode("latin-1"),
             "[" * 10**5 + "]" * 10**5,
             json.dumps({"type": "started", "time": 1, "pid": "x", "num_train": 3}),
             json.dumps({"type": "progress", "step": 2, "loss": "abc", "metrics": [1]}),
             json.dumps({"type": "finished", "time": 2, "table": [[[]]], "steps": 2}),
             json.dumps({"type": "newer_type", "time": 3, "anything": {"a": 1}}),
             json.dumps({"type": "progress", "time": 4, "step": 3, "new_field": 1}),
             '{"type": "progress", "ti']  # half-written: the worker is mid-write
    (tmp_path / EVENTS_FILE).write_text("\n".join(lines), encoding="utf-8")
    assert read_events(tmp_path) == [
        {"type": "started", "time": 1, "num_train": 3, "seq": 6},
        {"type": "progress", "step": 2, "seq": 7},  # missing fields are no reason to skip
        {"type": "finished", "time": 2, "steps": 2, "seq": 8},
        {"type": "newer_type", "time": 3, "anything": {"a": 1}, "seq": 9},
        {"type": "progress", "time": 4, "step": 3, "new_field": 1, "seq": 10}]


@pytest.mark.parametrize("line", [b"\xff\xfe\n", b"{}", b'{"type": null}',
                                  b'{"type": "eval", "step": {"a": ' + b"[" * 900 + b"]" * 900
                                  + b"}}", b'{"type": "progress", "loss": 1e999, "step": 1}'])
def test_parse_event_never_raises(line):
    event = parse_event(line, 0)
    assert event is None or isinstance(event["type"], str)
