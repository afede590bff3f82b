"""The training form, generated from the config schema.

Each field of `TrainConfig` becomes one input, placed in the accordion of its
`json_schema_extra["group"]`; the input kind follows the field's type (Literal -> dropdown,
bool -> checkbox, int/float -> number, anything else -> text). A new config field therefore
appears here without UI code. Values travel as one list in `ConfigForm.fields` order and are
validated by `build_config`, so the form shows the same problems, in the same words, as the API.
"""

from __future__ import annotations

import json
import typing
from dataclasses import dataclass
from typing import Any, Callable, Literal

import gradio as gr
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from trainers.config import ADAPTIVE_DEFAULTS, PRESETS, TrainConfig, build_config
from trainers.errors import ConfigError

GROUPS = [("model", "Model and provider"), ("data", "Data"), ("lora", "LoRA"),
          ("optimisation", "Optimisation"), ("advanced", "Advanced")]
OPEN_GROUPS = ("model", "data")

# A preset describes the training recipe, not the job: these groups keep the user's values.
JOB_GROUPS = ("model", "data")


@dataclass
class FieldSpec:
    """One config field and how the form shows it."""

    name: str
    group: str
    kind: str  # choice | multichoice | bool | int | float | optional_number | list | text | json
    description: str
    default: Any  # PydanticUndefined when required
    choices: tuple = ()

    @property
    def required(self) -> bool:
        return self.default is PydanticUndefined

    def to_display(self, value: Any) -> Any:
        """A config value as the input shows it."""
        if value is PydanticUndefined or value is None:
            return None if self.kind in ("int", "float", "choice", "multichoice") else ""
        if self.kind == "list":
            return value if isinstance(value, str) else ", ".join(value)
        if self.kind == "multichoice" and isinstance(value, str):  # report_to: "wandb", "none"
            return [] if value == "none" else [value]
        if self.kind == "json":
            return json.dumps(value) if value not in ({}, []) else ""
        if self.kind == "optional_number":
            return str(value)
        return value

    def to_value(self, shown: Any) -> Any:
        """What the input holds, as a config value (build_config judges it)."""
        if self.kind == "list":
            return _parse_list(self.name, shown or "", self.choices)
        if self.kind == "json":
            return _parse_json(self.name, shown or "", self.default)
        if self.kind == "optional_number":
            return _parse_optional_number(self.name, shown)
        if self.kind == "int" and isinstance(shown, float) and shown.is_integer():
            return int(shown)
        return shown


def _parse_list(name: str, text: str, words: tuple) -> Any:
    """One of the field's words (e.g. `auto`), a JSON list, or names separated by commas."""
    text = text.strip()
    if text in words:
        return text
    if text.startswith("["):
        return _parse_json(name, text, [])
    return [part.strip() for part in text.split(",") if part.strip()]


def _parse_optional_number(name: str, text: Any) -> float | None:
    text = str(text if text is not None else "").strip()
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        raise ConfigError([{"field": name, "message": f"got {text!r}: give a number, or leave "
                                                      "it empty"}]) from None


def _parse_json(name: str, text: str, default: Any) -> Any:
    text = text.strip()
    if not text:
        return {} if isinstance(default, dict) else []
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError([{"field": name, "message": f"is not valid JSON: {exc.msg} at column "
                                                      f"{exc.colno}; write e.g. "
                                                      "{\"prompt\": \"question\"}"}]) from None


def _kind(annotation: Any) -> tuple[str, tuple]:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Literal:
        return "choice", args
    if origin is typing.Union and type(None) in args:  # Optional[X]: X, empty allowed
        rest = [a for a in args if a is not type(None)]
        if rest in ([int], [float]):
            return "optional_number", ()  # a text box: a number box cannot be left empty
        if len(rest) == 1:
            return _kind(rest[0])
    if origin is list and args and typing.get_origin(args[0]) is Literal:
        return "multichoice", typing.get_args(args[0])
    if annotation in (bool, int, float):
        return annotation.__name__, ()
    if annotation is str:
        return "text", ()
    if any(typing.get_origin(a) is list for a in args) or origin is list:
        words = tuple(w for a in args if typing.get_origin(a) is Literal
                      for w in typing.get_args(a))
        return "list", words  # e.g. "auto" or a list of names
    return "json", ()


def field_specs(model: type[BaseModel] = TrainConfig, default_group: str = "advanced"
                ) -> list[FieldSpec]:
    specs = []
    for name, info in model.model_fields.items():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        kind, choices = _kind(info.annotation)
        specs.append(FieldSpec(name=name, group=str(extra.get("group", default_group)), kind=kind,
                               description=info.description or "", default=info.default,
                               choices=choices))
    return specs


def _component(spec: FieldSpec, initial: Any = None) -> gr.components.Component:
    label = spec.name + (" (required)" if spec.required else "")
    value = spec.to_display(spec.default if initial is None else initial)
    common = dict(label=label, info=spec.description, elem_id=f"cfg-{spec.name}")
    if spec.kind == "choice":
        return gr.Dropdown(choices=list(spec.choices), value=value, **common)
    if spec.kind == "multichoice":
        return gr.CheckboxGroup(choices=list(spec.choices), value=value, **common)
    if spec.kind == "bool":
        return gr.Checkbox(value=value, **common)
    if spec.kind in ("int", "float"):
        return gr.Number(value=value, precision=0 if spec.kind == "int" else None, **common)
    return gr.Textbox(value=value, max_lines=1, **common)


class ConfigForm:
    """The generated inputs, and the conversions between them and a config dict.

    `build` validates a dict into the model (raising ConfigError); fields without a group in
    their metadata go to `default_group`."""

    def __init__(self, model: type[BaseModel] = TrainConfig,
                 build: Callable[[dict], BaseModel] = build_config,
                 default_group: str = "advanced", open_groups: tuple = OPEN_GROUPS,
                 titles: dict[str, str] | None = None):
        self.specs = field_specs(model, default_group)
        self.build = build
        self.open_groups = open_groups
        self.titles = titles or {}  # accordion titles of groups GROUPS does not name
        self.components: list[gr.components.Component] = []

    def render(self, extras: dict[str, Callable[[], None]] | None = None,
               initial: dict | None = None) -> list[gr.components.Component]:
        """Create the inputs inside the current Blocks context, one accordion per group;
        `extras[group]()` adds more inside that group's accordion (e.g. the data upload);
        `initial` holds starting values other than the schema's defaults."""
        known = [g for g, _ in GROUPS]
        groups = GROUPS + [(g, self.titles.get(g, g.title()))
                           for g in dict.fromkeys(s.group for s in self.specs) if g not in known]
        by_name = {}
        for group, title in groups:
            specs = [s for s in self.specs if s.group == group]
            if not specs:
                continue
            with gr.Accordion(title, open=group in self.open_groups, elem_id=f"group-{group}"):
                for spec in specs:
                    by_name[spec.name] = _component(spec, (initial or {}).get(spec.name))
                if extras and group in extras:
                    extras[group]()
        self.components = [by_name[s.name] for s in self.specs]
        return self.components

    def component(self, name: str) -> gr.components.Component:
        return self.components[self.index(name)]

    def index(self, name: str) -> int:
        return [s.name for s in self.specs].index(name)

    # -- values <-> config -------------------------------------------------------------------
    def to_dict(self, values: list) -> tuple[dict, list[dict]]:
        """Form values -> (config dict, problems of the text fields that did not parse).

        An empty required field is left out, so validation reports it as missing rather than
        accepting an empty string; a field that did not parse is left out and reported."""
        data, problems = {}, []
        for spec, shown in zip(self.specs, values):
            if spec.required and (shown is None or str(shown).strip() == ""):
                continue
            if spec.name in ADAPTIVE_DEFAULTS and shown == spec.to_display(spec.default):
                continue  # left at its default: it adapts to the other fields
            try:
                data[spec.name] = spec.to_value(shown)
            except ConfigError as exc:
                problems.extend(exc.problems)
        return data, problems

    def validate(self, values: list) -> BaseModel:
        """The config, or ConfigError with every problem (parsing and schema rules together)."""
        data, problems = self.to_dict(values)
        try:
            cfg = self.build(data)
        except ConfigError as exc:
            problems = problems + exc.problems
        if problems:
            raise ConfigError(problems)
        return cfg

    def from_dict(self, data: dict) -> list:
        """A config dict -> form values; fields it lacks show their defaults."""
        return [spec.to_display(data.get(spec.name, spec.default)) for spec in self.specs]

    def with_preset(self, preset: str, values: list) -> list:
        """Defaults, the job's own fields (model and data groups) kept, then the preset."""
        if preset not in PRESETS:
            choices = ", ".join(PRESETS)
            raise ConfigError([{"field": "preset", "message": f"unknown preset '{preset}': "
                                                              f"choose one of {choices}"}])
        preset_fields = {k for p in PRESETS.values() for k in p}
        out = []
        for spec, shown in zip(self.specs, values):
            if spec.name in PRESETS[preset]:
                out.append(spec.to_display(PRESETS[preset][spec.name]))
            elif spec.group in JOB_GROUPS and spec.name not in preset_fields:
                out.append(shown)
            else:
                out.append(spec.to_display(spec.default))
        return out


def problems_markdown(problems: list[dict]) -> str:
    """Every problem on its own line, field first, the fix in the message (as the API says it)."""
    lines = [f"- **{p['field']}**: {p['message']}" for p in problems]
    noun = "problem" if len(problems) == 1 else "problems"
    return f"**{len(problems)} {noun} to fix before starting:**\n\n" + "\n".join(lines)
