"""Data: read a file, detect its format, turn rows into examples, tokenize, preview.

Everything here fails with a `DataError` naming the file and the line before any model loads.
Examples come in two shapes:
  language modelling  {"prompt": str, "completion": str, "line": int}   (prompt "" for plain text)
                      or {"messages": [...], "line": int}, rendered later with the chat template
  preference          {"prompt": str, "chosen": str, "rejected": str, "line": int}
"""

from __future__ import annotations

import codecs
import errno
import json
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from trainers.errors import DataError

EXTENSIONS = {".json": "json", ".jsonl": "jsonl", ".csv": "csv", ".parquet": "parquet"}
PREFERENCE_STRATEGIES = ("dpo", "rlhf")

# Format name -> the standard fields that identify it, most specific first.
FORMATS: list[tuple[str, tuple[str, ...]]] = [
    ("preference", ("prompt", "chosen", "rejected")),
    ("preference_shared_prefix", ("chosen", "rejected")),
    ("nested_instances", ("instruction", "instances")),
    ("alpaca", ("instruction", "output")),
    ("messages", ("messages",)),
    ("prompt_completion", ("prompt", "completion")),
    ("summarization", ("document", "summary")),
    ("question_answering", ("question", "answer")),
    ("question_answering", ("question", "answers")),
    ("text", ("text",)),
]
STANDARD_FIELDS = sorted({f for _, fields in FORMATS for f in fields} | {"input", "context"})


@dataclass
class LoadedData:
    source: str
    format: str
    examples: list[dict]
    num_rows: int
    columns: list[str] = field(default_factory=list)

    @property
    def is_preference(self) -> bool:
        return self.format.startswith("preference")


# --- reading ------------------------------------------------------------------------------

# What one data set may hold. A small file can decode to gigabytes (a compressed Parquet file,
# a CSV of a million columns), so each limit is checked before the data is decoded: a file's
# size, a CSV's header and line count, a Parquet file's metadata; Parquet's decoded size as its
# batches are read. The environment variable beside each changes it (docs/security.md).
DATA_LIMITS = {"rows": ("MODELFORGE_DATA_MAX_ROWS", 1_000_000),
               "columns": ("MODELFORGE_DATA_MAX_COLUMNS", 1_000),
               "mb": ("MODELFORGE_DATA_MAX_MB", 512)}  # as the default upload limit
CSV_HEADER_MAX_BYTES = 2**20


def data_limit(name: str) -> int:
    variable, default = DATA_LIMITS[name]
    text = os.environ.get(variable, "")
    if not text:
        return default
    if not text.isdigit() or int(text) < 1:
        raise DataError(f"{variable}={text!r} is not a positive whole number.",
                        f"Set it to e.g. {default}, or unset it for the default.")
    return int(text)


def _over_limit(path: Path, what: str, count: int | str | None, name: str) -> DataError:
    variable, _ = DATA_LIMITS[name]
    unit = " MB" if name == "mb" else ""
    counted = f" ({count})" if count is not None else ""
    return DataError(f"Data set file {path} {what}{counted} than this server reads: at most "
                     f"{data_limit(name):,}{unit}.",
                     f"Split it into smaller files, or ask the operator to raise {variable}.")


def read_rows(source: str, split: str = "train") -> tuple[list[dict], list[int]]:
    """Rows of a local file (or hub data set) and the line each came from."""
    path = Path(source)
    if not path.exists() and not path.is_symlink():
        if _looks_like_hub_id(source):
            return _read_hub(source, split)
        raise DataError(f"Data set file {source} does not exist.",
                        "Check the path, or upload the file first.")
    if path.is_dir():
        raise DataError(f"Data set path {source} is a directory.",
                        "Point `dataset` at one .json, .jsonl, .csv or .parquet file.")
    kind = EXTENSIONS.get(path.suffix.lower())
    if kind is None:
        raise DataError(f"Data set file {source} has the unsupported extension '{path.suffix}'.",
                        "Use .json, .jsonl, .csv or .parquet.")
    fd = _open_validated(path)
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            raise DataError(f"Data set file {source} is empty.", "Add at least one example.")
        opened = Path(f"/proc/self/fd/{fd}") if Path("/proc/self/fd").is_dir() else path
        if kind != "parquet":
            if size > data_limit("mb") * 2**20:
                raise _over_limit(path, "is larger", f"{size / 2**20:,.0f} MB", "mb")
            _check_utf8(opened, path)
        readers = {"jsonl": _read_jsonl, "json": _read_json, "csv": _read_csv,
                   "parquet": _read_parquet}
        rows, lines = readers[kind](opened, path)
    finally:
        os.close(fd)
    if not rows:
        raise DataError(f"Data set file {source} holds no rows.", "Add at least one example.")
    return rows, lines


def _open_validated(path: Path) -> int:
    """A descriptor of the file the run was checked with. A config holds the data set's
    resolved path, so a symbolic link swapped in since (for the file, or a folder above it) is
    refused rather than followed out of the allowed roots: the last part is opened with
    O_NOFOLLOW, and the opened file's own path must still be the path given."""
    refused = DataError(f"Data set file {path} is a symbolic link, or lies under one that was "
                        "made after the path was checked; it is not read.",
                        "Point `dataset` at the file itself and check the run again.")
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise refused from None
        raise DataError(f"Data set file {path} cannot be opened: {exc.strerror}.",
                        "Check that the file exists and the server may read it.") from None
    proc_link = f"/proc/self/fd/{fd}"
    real = os.readlink(proc_link) if os.path.islink(proc_link) else os.path.realpath(path)
    if path.is_absolute() and real != os.path.normpath(path):
        os.close(fd)
        raise refused
    return fd


def _looks_like_hub_id(source: str) -> bool:
    return "/" in source and not source.startswith(("/", ".", "~")) and source.count("/") == 1 \
        and not Path(source).suffix


TEXT_HINT = "Save it as UTF-8 text (JSON, JSON Lines or CSV), or as a Parquet file."


def _check_utf8(opened: Path, path: Path) -> None:
    """JSON, JSON Lines and CSV must be UTF-8: say so, naming the byte, instead of a codec error
    (read in chunks, so a large file is not held in memory twice). `opened` is what is read,
    `path` what the messages name (see read_rows)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    with opened.open("rb") as fh:
        while True:
            chunk = fh.read(1 << 20)
            try:
                decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as exc:
                utf16 = offset == 0 and chunk[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
                what = "UTF-16 text" if utf16 else \
                    f"binary or another encoding at byte {offset + exc.start}"
                raise DataError(f"Data set file {path} is not UTF-8 text ({what}).",
                                TEXT_HINT) from None
            if not chunk:
                return
            offset += len(chunk)


def _too_deep(where: str) -> DataError:
    return DataError(f"{where}: the JSON is nested too deeply to read.",
                     "Rows are flat objects of text fields, e.g. {\"prompt\": ..., "
                     "\"completion\": ...}.")


def _read_jsonl(opened: Path, path: Path) -> tuple[list[dict], list[int]]:
    rows, lines = [], []
    max_rows, max_columns = data_limit("rows"), data_limit("columns")
    with opened.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            if len(rows) == max_rows:
                raise _over_limit(path, "has more rows", f"line {number}", "rows")
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}: malformed JSON on line {number}: {exc.msg} "
                                f"(column {exc.colno}).",
                                "Each line of a .jsonl file must be one complete JSON object.")
            except RecursionError:
                raise _too_deep(f"{path}: line {number}") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}: line {number} is not a JSON object.",
                                "Each line must look like {\"prompt\": ..., \"completion\": ...}.")
            if len(row) > max_columns:
                raise _over_limit(path, f"line {number} has more fields", len(row), "columns")
            rows.append(row)
            lines.append(number)
    return rows, lines


def _read_json(opened: Path, path: Path) -> tuple[list[dict], list[int]]:
    text = opened.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        if text.lstrip().startswith("{") and "\n{" in text:
            return _read_jsonl(opened, path)  # JSON Lines saved with a .json name
        raise DataError(f"{path}: malformed JSON on line {exc.lineno}: {exc.msg}.",
                        "Fix the file, or save it as JSON Lines (.jsonl), one object per line.")
    except RecursionError:
        raise _too_deep(str(path)) from None
    if isinstance(data, dict):  # {"data": [...]} style, as datasets' json loader reads it
        lists = [v for v in data.values() if isinstance(v, list)]
        data = lists[0] if len(lists) == 1 else [data]
    if not all(isinstance(r, dict) for r in data):
        raise DataError(f"{path}: expected a list of JSON objects.",
                        "Use [{\"prompt\": ..., \"completion\": ...}, ...] or JSON Lines.")
    if len(data) > data_limit("rows"):
        raise _over_limit(path, "has more rows", f"{len(data):,}", "rows")
    widest = max((len(r) for r in data), default=0)
    if widest > data_limit("columns"):
        raise _over_limit(path, "has a row with more fields", widest, "columns")
    return data, list(range(1, len(data) + 1))


def _read_csv(opened: Path, path: Path) -> tuple[list[dict], list[int]]:
    import csv

    with opened.open("rb") as fh:
        header = fh.readline(CSV_HEADER_MAX_BYTES)
        if not header.endswith(b"\n") and fh.read(1):
            raise DataError(f"Data set file {path} has a header line over "
                            f"{CSV_HEADER_MAX_BYTES // 2**20} MB: more columns than this server "
                            f"reads (at most {data_limit('columns'):,}).",
                            "Check that it is a CSV file with one short header line.")
        columns = next(csv.reader([header.decode("utf-8")]), [])
        if len(columns) > data_limit("columns"):
            raise _over_limit(path, "has more columns", f"{len(columns):,}", "columns")
        newlines = sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))
    if newlines > data_limit("rows"):
        raise _over_limit(path, "has more lines", f"{newlines:,}", "rows")
    import datasets

    try:
        table = datasets.Dataset.from_csv(str(opened), keep_in_memory=True)
    except Exception as exc:  # pyarrow's parse errors name the row themselves
        raise DataError(f"{path}: could not be read: {exc}",
                        "Check that the file is a valid CSV file with a header row.")
    rows = table.to_list()
    return rows, list(range(2, 2 + len(rows)))  # line 1 is the header


def _read_parquet(opened: Path, path: Path) -> tuple[list[dict], list[int]]:
    """Rows of a Parquet file: its metadata's row and column counts are checked first, then
    it is decoded a batch at a time until its decoded size passes the limit."""
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(str(opened))
    except Exception as exc:  # not Parquet: pyarrow says what it found
        raise DataError(f"{path}: could not be read: {exc}",
                        "Check that the file is a valid Parquet file.")
    meta = parquet.metadata
    if meta.num_rows > data_limit("rows"):
        raise _over_limit(path, "has more rows", f"{meta.num_rows:,}", "rows")
    if meta.num_columns > data_limit("columns"):
        raise _over_limit(path, "has more columns", f"{meta.num_columns:,}", "columns")
    max_bytes = data_limit("mb") * 2**20
    stored = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
    if stored > max_bytes:  # uncompressed: one long value alone can be gigabytes
        raise _over_limit(path, "is larger uncompressed", f"{stored / 2**20:,.0f} MB", "mb")
    rows, decoded = [], 0
    try:
        for batch in parquet.iter_batches(batch_size=1000):
            batch = _dictionary_decoded(batch)
            decoded += batch.nbytes
            if decoded > max_bytes:
                raise _over_limit(path, "decodes to more text", None, "mb")
            rows += batch.to_pylist()
    except (DataError, MemoryError):  # a MemoryError is diagnosed as such
        raise
    except Exception as exc:
        raise DataError(f"{path}: could not be read: {exc}",
                        "Check that the file is a valid Parquet file.")
    return rows, list(range(1, len(rows) + 1))


def _dictionary_decoded(batch):
    """The batch with its dictionary columns expanded, so nbytes counts what Python will hold
    (a column of one repeated long text is tiny while encoded)."""
    import pyarrow as pa

    columns = [column.dictionary_decode() if pa.types.is_dictionary(column.type) else column
               for column in batch.columns]
    return pa.RecordBatch.from_arrays(columns, names=batch.schema.names)


def _read_hub(name: str, split: str) -> tuple[list[dict], list[int]]:
    import datasets

    try:
        table = datasets.load_dataset(name, split=split)
    except Exception as exc:
        raise DataError(f"Could not load the hub data set {name!r} (split {split!r}): {exc}",
                        "Without a network, download the data set elsewhere and point `dataset` "
                        "at a local .jsonl/.csv/.parquet file.")
    rows = table.to_list()
    return rows, list(range(1, len(rows) + 1))


# --- format detection ---------------------------------------------------------------------

def detect_format(columns: Iterable[str], column_mapping: dict[str, str] | None = None) -> str:
    """The format name for these columns (after applying the mapping)."""
    available = set(columns) | set((column_mapping or {}).keys())
    for name, needed in FORMATS:
        if all(f in available for f in needed):
            return name
    raise DataError(
        f"Could not detect the data format from the columns {sorted(columns)}.",
        "Use one of: text; prompt/completion; instruction/input/output; messages; "
        "document/summary; question/context/answer; prompt/chosen/rejected; chosen/rejected. "
        "Or map your columns with column_mapping, e.g. {\"prompt\": \"your_column\"}.")


def _get(row: dict, name: str, mapping: dict[str, str]) -> Any:
    return row.get(mapping.get(name, name))


def _require_text(row: dict, name: str, mapping: dict, where: str) -> str:
    value = _get(row, name, mapping)
    if value is None:
        column = mapping.get(name, name)
        raise DataError(f"{where}: missing field '{column}'.",
                        f"Every row needs '{column}', or change column_mapping.")
    if not isinstance(value, str):
        value = json.dumps(value, ensure_ascii=False) if not isinstance(value, (int, float)) \
            else str(value)
    return value


# --- rows -> examples ---------------------------------------------------------------------

PROMPT_TEMPLATES = {
    "alpaca": "### Instruction:\n{instruction}\n\n### Response:\n",
    "alpaca_input": "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n",
    "summarization": "Summarize the following text.\n\n{document}\n\nSummary:",
    "question_answering": "Answer the question.\n\nQuestion: {question}\n\nAnswer:",
    "question_answering_context":
        "Answer the question using the context.\n\nContext: {context}\n\nQuestion: {question}\n\nAnswer:",
}


def _alpaca(instruction: str, inp: str, output: str, line: int) -> dict:
    template = PROMPT_TEMPLATES["alpaca_input" if inp.strip() else "alpaca"]
    return {"prompt": template.format(instruction=instruction, input=inp),
            "completion": output, "line": line}


def _answer_text(value: Any) -> str:
    """`answers` may be a list or SQuAD's {"text": [...]}: take the first answer."""
    if isinstance(value, dict):
        value = value.get("text", "")
    if isinstance(value, list):
        value = value[0] if value else ""
    return str(value)


def _shared_prefix_prompt(chosen: str, rejected: str) -> tuple[str, str, str]:
    """Split two dialogues at the start of the turn where they first differ."""
    n = 0
    for a, b in zip(chosen, rejected):
        if a != b:
            break
        n += 1
    marker = chosen.rfind("Assistant:", 0, n)  # keep the last speaker tag in the prompt
    cut = marker + len("Assistant:") if marker != -1 else n
    return chosen[:cut], chosen[cut:], rejected[cut:]


def rows_to_examples(rows: list[dict], lines: list[int], fmt: str, source: str,
                     mapping: dict[str, str]) -> list[dict]:
    examples: list[dict] = []
    for row, line in zip(rows, lines):
        where = f"{source}: line {line}"
        if fmt == "text":
            examples.append({"prompt": "", "completion": _require_text(row, "text", mapping, where),
                             "line": line})
        elif fmt == "prompt_completion":
            examples.append({"prompt": _require_text(row, "prompt", mapping, where),
                             "completion": _require_text(row, "completion", mapping, where),
                             "line": line})
        elif fmt == "alpaca":
            examples.append(_alpaca(_require_text(row, "instruction", mapping, where),
                                    str(_get(row, "input", mapping) or ""),
                                    _require_text(row, "output", mapping, where), line))
        elif fmt == "nested_instances":
            instruction = _require_text(row, "instruction", mapping, where)
            instances = _get(row, "instances", mapping)
            if not isinstance(instances, list) or not instances:
                raise DataError(f"{where}: 'instances' must be a non-empty list.",
                                "Each instance needs an 'output' (and optionally an 'input').")
            for inst in instances:
                examples.append(_alpaca(instruction, str(inst.get("input") or ""),
                                        _require_text(inst, "output", {}, where), line))
        elif fmt == "messages":
            messages = _get(row, "messages", mapping)
            if not isinstance(messages, list) or not messages or \
                    not all(isinstance(m, dict) and "role" in m and "content" in m for m in messages):
                raise DataError(f"{where}: 'messages' must be a list of {{role, content}} objects.",
                                "Example: [{\"role\": \"user\", \"content\": \"Hi\"}, "
                                "{\"role\": \"assistant\", \"content\": \"Hello!\"}]")
            if messages[-1]["role"] != "assistant":
                raise DataError(f"{where}: the last message must be the assistant's.",
                                "End every conversation with the reply the model should learn.")
            examples.append({"messages": messages, "line": line})
        elif fmt == "summarization":
            doc = _require_text(row, "document", mapping, where)
            examples.append({"prompt": PROMPT_TEMPLATES["summarization"].format(document=doc),
                             "completion": " " + _require_text(row, "summary", mapping, where),
                             "line": line})
        elif fmt == "question_answering":
            question = _require_text(row, "question", mapping, where)
            context = str(_get(row, "context", mapping) or "")
            key = "answer" if _get(row, "answer", mapping) is not None else "answers"
            answer = _answer_text(_get(row, key, mapping))
            if not answer:
                raise DataError(f"{where}: missing field '{key}'.", "Every row needs an answer.")
            template = PROMPT_TEMPLATES["question_answering_context" if context else
                                        "question_answering"]
            examples.append({"prompt": template.format(question=question, context=context),
                             "completion": " " + answer, "line": line})
        else:
            examples.append(_preference_example(row, line, fmt, mapping, where))
    return examples


def _preference_example(row: dict, line: int, fmt: str, mapping: dict, where: str) -> dict:
    chosen = _require_text(row, "chosen", mapping, where)
    rejected = _require_text(row, "rejected", mapping, where)
    if fmt == "preference":
        prompt = _require_text(row, "prompt", mapping, where)
    else:
        prompt, chosen, rejected = _shared_prefix_prompt(chosen, rejected)
    if not prompt.strip():
        raise DataError(f"{where}: the prompt is empty.",
                        "Give every pair a prompt (or chosen/rejected dialogues that share "
                        "their opening turns).")
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected, "line": line}


def load_data(source: str, split: str = "train", column_mapping: dict | None = None,
              strategy: str = "sft") -> LoadedData:
    """Read, detect and convert; check the data fits the strategy. No model is touched."""
    mapping = dict(column_mapping or {})
    rows, lines = read_rows(source, split)
    columns = sorted({k for r in rows[:100] for k in r})
    missing = [c for c in mapping.values() if c not in columns]
    if missing:
        raise DataError(f"{source}: column_mapping names columns that are not in the data: "
                        f"{missing}.", f"The data's columns are {columns}.")
    unknown = [k for k in mapping if k not in STANDARD_FIELDS]
    if unknown:
        raise DataError(f"column_mapping has unknown standard fields {unknown}.",
                        f"Map any of {STANDARD_FIELDS} to your columns.")
    wants_pairs = strategy in PREFERENCE_STRATEGIES
    if wants_pairs and ("chosen" in columns or "chosen" in mapping):
        _check_pair_fields(rows, lines, source, mapping)
    fmt = detect_format(columns, mapping)
    if wants_pairs != fmt.startswith("preference"):
        need = "preference pairs (prompt/chosen/rejected or chosen/rejected)" if wants_pairs \
            else "supervised examples (text, prompt/completion, instruction/output, messages...)"
        raise DataError(f"{source}: strategy {strategy} needs {need}, but the data is in the "
                        f"'{fmt}' format.",
                        "Pick a data set in the right format, or change the strategy.")
    examples = rows_to_examples(rows, lines, fmt, source, mapping)
    if wants_pairs:
        _check_pairs_differ(examples, source)
    return LoadedData(source=source, format=fmt, examples=examples, num_rows=len(rows),
                      columns=columns)


def _check_pair_fields(rows: list[dict], lines: list[int], source: str, mapping: dict) -> None:
    """Preference data with a chosen column: name the first line that lacks chosen or rejected."""
    for row, line in zip(rows, lines):
        for name in ("chosen", "rejected"):
            if _get(row, name, mapping) is None:
                column = mapping.get(name, name)
                raise DataError(f"{source}: line {line}: missing field '{column}'.",
                                "Every preference pair needs 'chosen' and 'rejected' (and "
                                "optionally 'prompt'), or map your columns with column_mapping.")


def _check_pairs_differ(examples: list[dict], source: str) -> None:
    same = [e["line"] for e in examples if e["chosen"].strip() == e["rejected"].strip()]
    if len(same) == len(examples):
        raise DataError(f"{source}: chosen and rejected are identical on every line "
                        f"(first: line {same[0]}).",
                        "Preference training needs a better and a worse answer per prompt.")


# --- tokenization -------------------------------------------------------------------------

def render_messages(example: dict, tokenizer) -> dict:
    """Chat examples -> prompt (everything before the last assistant turn) + completion."""
    messages = example["messages"]
    if getattr(tokenizer, "chat_template", None):
        prompt = tokenizer.apply_chat_template(messages[:-1], tokenize=False,
                                               add_generation_prompt=True)
        full = tokenizer.apply_chat_template(messages, tokenize=False)
        if full.startswith(prompt):
            return {"prompt": prompt, "completion": full[len(prompt):], "line": example["line"]}
    prompt = "".join(f"<|{m['role']}|>\n{m['content']}\n" for m in messages[:-1]) + \
        "<|assistant|>\n"
    return {"prompt": prompt, "completion": messages[-1]["content"], "line": example["line"]}


def as_prompt_completion(example: dict, tokenizer) -> dict:
    return render_messages(example, tokenizer) if "messages" in example else example


def tokenize_example(example: dict, tokenizer, completion_only_loss: bool) -> dict:
    """input_ids and completion_mask (TRL's pre-tokenized format), before truncation."""
    example = as_prompt_completion(example, tokenizer)
    prompt_ids = tokenizer(example["prompt"], add_special_tokens=True)["input_ids"] \
        if example["prompt"] else _bos(tokenizer)
    completion_ids = tokenizer(example["completion"], add_special_tokens=False)["input_ids"]
    if tokenizer.eos_token_id is not None:
        completion_ids = completion_ids + [tokenizer.eos_token_id]
    mask_prompt = completion_only_loss and bool(example["prompt"])
    return {"input_ids": prompt_ids + completion_ids,
            "completion_mask": [0 if mask_prompt else 1] * len(prompt_ids) + [1] * len(completion_ids)}


def tokenize_seq2seq_examples(examples: list[dict], tokenizer,
                               max_seq_length: int) -> tuple[list[dict], dict]:
    """Encoder-decoder rows: the prompt is the encoder input, the completion the labels."""
    rows = []
    for example in examples:
        example = as_prompt_completion(example, tokenizer)
        if not example["prompt"]:
            raise DataError(f"line {example['line']}: encoder-decoder models need an input and "
                            "a target, but this row is plain text.",
                            "Use prompt/completion, document/summary or question/answer data.")
        labels = tokenizer(example["completion"].strip())["input_ids"]
        if tokenizer.eos_token_id is not None and labels[-1:] != [tokenizer.eos_token_id]:
            labels = labels + [tokenizer.eos_token_id]
        rows.append({"input_ids": tokenizer(example["prompt"])["input_ids"], "labels": labels})
    stats = token_stats([len(r["input_ids"]) for r in rows], max_seq_length)
    for r in rows:
        r["input_ids"], r["labels"] = r["input_ids"][:max_seq_length], r["labels"][:max_seq_length]
    return rows, stats


def _bos(tokenizer) -> list[int]:
    bos = tokenizer.bos_token_id
    return [bos] if bos is not None else []


def tokenize_examples(examples: list[dict], tokenizer, max_seq_length: int,
                      completion_only_loss: bool) -> tuple[list[dict], dict]:
    """Tokenize and truncate; return the tokenized rows and their length statistics."""
    rows = [tokenize_example(e, tokenizer, completion_only_loss) for e in examples]
    stats = token_stats([len(r["input_ids"]) for r in rows], max_seq_length)
    for r in rows:
        r["input_ids"] = r["input_ids"][:max_seq_length]
        r["completion_mask"] = r["completion_mask"][:max_seq_length]
    return rows, stats


def trainable_rows(rows: list[dict], source: str, max_seq_length: int) -> tuple[list[dict], int]:
    """The rows with a token left to learn from after truncation, and how many had none (a
    prompt that fills max_seq_length under completion-only loss). TRL drops such rows itself
    when it truncates, and only then, so a padded run and a padding-free one (whose rows it does
    not cut again) would train on different rows; every run leaves them out here instead."""
    kept = [r for r in rows if any(r["completion_mask"])]
    if not kept:
        raise DataError(f"{source}: no example has a completion token within the first "
                        f"{max_seq_length} tokens: every prompt fills max_seq_length.",
                        "Raise max_seq_length, shorten the prompts, or set "
                        "completion_only_loss to false.")
    return kept, len(rows) - len(kept)


def token_stats(lengths: list[int], max_seq_length: int | None) -> dict:
    ordered = sorted(lengths)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
    stats = {"count": len(ordered), "min": ordered[0], "median": statistics.median(ordered),
             "p95": p95, "max": ordered[-1], "total_tokens": sum(ordered)}
    if max_seq_length and max_seq_length > 0:
        stats["max_seq_length"] = max_seq_length
        stats["truncated"] = sum(1 for n in ordered if n > max_seq_length)
    return stats


def infer_max_seq_length(lengths: list[int], model_max: int | None) -> int:
    """-1: the longest example, rounded up to a multiple of 8, capped at the model's maximum."""
    longest = max(lengths)
    value = max(16, -(-longest // 8) * 8)
    if model_max and model_max > 0:
        value = min(value, model_max)
    return value


def model_max_length(model_name: str, trust_remote_code: bool = False) -> int | None:
    """The model's position limit from its config, without loading weights."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_name, trust_remote_code=trust_remote_code)
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def check_enough_for_a_batch(n_train: int, batch_size: int, source: str) -> None:
    if n_train < batch_size:
        raise DataError(f"{source}: only {n_train} training examples, fewer than one batch of "
                        f"{batch_size}.",
                        "Add examples, or lower per_device_train_batch_size (and eval_split).")


def eval_rows(n_examples: int, eval_split: float) -> int:
    """How many of n examples eval_split holds out."""
    return max(1, int(round(n_examples * eval_split))) if eval_split > 0 else 0


def eval_split_problem(n_examples: int, eval_split: float, batch_size: int) -> str | None:
    """Why eval_split holds out too few examples, or None. An evaluation needs one batch (the
    trainer's evaluation batch is the training batch size): a row or two says little, and a
    lone row whose answer is cut off gives no eval_loss at all."""
    held_out = eval_rows(n_examples, eval_split)
    if not 0 < held_out < batch_size:
        return None
    return (f"eval_split {eval_split} holds out {held_out} of {n_examples} examples, fewer than "
            f"one evaluation batch of {batch_size} (per_device_train_batch_size): set eval_split "
            f"to at least {batch_size / n_examples:.3g} ({batch_size} examples), or 0 for no "
            "evaluation")


def split_train_eval(items: list, eval_split: float, seed: int) -> tuple[list, list]:
    if eval_split <= 0:
        return items, []
    import random

    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    n_eval = eval_rows(len(items), eval_split)
    eval_idx = set(order[:n_eval])
    return ([x for i, x in enumerate(items) if i not in eval_idx],
            [x for i, x in enumerate(items) if i in eval_idx])


# --- preview ------------------------------------------------------------------------------

def preview(source: str, tokenizer=None, n: int = 5, max_seq_length: int | None = None,
            split: str = "train", column_mapping: dict | None = None, strategy: str = "sft",
            completion_only_loss: bool = True) -> dict:
    """The first n rendered examples, the detected format and token-length statistics."""
    data = load_data(source, split, column_mapping, strategy)
    result: dict[str, Any] = {"source": source, "format": data.format, "columns": data.columns,
                              "num_rows": data.num_rows, "num_examples": len(data.examples)}
    shown = []
    for ex in data.examples[:n]:
        ex = as_prompt_completion(ex, tokenizer) if tokenizer is not None else ex
        shown.append({k: v for k, v in ex.items()})
    result["examples"] = shown
    if tokenizer is not None:
        if data.is_preference:
            lengths = [len(tokenizer(e["prompt"] + e["chosen"])["input_ids"]) for e in data.examples]
        else:
            lengths = [len(tokenize_example(e, tokenizer, completion_only_loss)["input_ids"])
                       for e in data.examples]
        result["token_stats"] = token_stats(lengths, max_seq_length)
    return result

