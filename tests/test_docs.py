"""The user-facing text stays true to the repository: its relative links and the paths it names
resolve, its `bash` blocks run real `modelforge` commands with real flags, the field reference
is the schema's, every result folder is indexed, and no sentence leans on internal history.

Plain file reads and argparse, no server and no model: the fast tier.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex
from pathlib import Path


from modelforge_ui.cli import _parser
from trainers.tools import config_reference

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
EVIDENCE_PAGES = sorted((ROOT / "benchmarks" / "results").rglob("README.md"))
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
CODE_PATH = re.compile(r"`((?:\.\./)+[\w./-]+|(?:benchmarks|docs|tests|trainers|modelforge_ui)/[\w./-]*)`")
FENCE = re.compile(r"^```bash\n(.*?)^```", re.MULTILINE | re.DOTALL)
INTERNAL_REFERENCE = re.compile(r"\b(issues?|calls?|items?) \d+\b", re.IGNORECASE)
SHELL_SEPARATORS = {"|", "||", "&&", ";", "&", ">", ">>", "<"}


def _relative_links(page: Path) -> list[str]:
    """Links to files in the repository; web links and same-page anchors are not files."""
    targets = LINK.findall(page.read_text(encoding="utf-8"))
    return [t for t in targets if not re.match(r"[a-z]+:|#", t)]


def _problems(pages: list[Path], find) -> dict[str, list]:
    """Each page's problems, so one failure lists every page that has one."""
    found = {str(page.relative_to(ROOT)): find(page) for page in pages}
    return {page: problems for page, problems in found.items() if problems}


def test_every_relative_link_resolves():
    # The part after '#' is not checked: headings move with prose, files are what break.
    assert not _problems(PAGES + EVIDENCE_PAGES, lambda page: [
        t for t in _relative_links(page) if not (page.parent / t.split("#")[0]).exists()])


def test_no_internal_references():
    """A reader has no tracker and no device log: "issue 13" or "call 12" says nothing to them.
    Say what was found and link the evidence."""
    assert not _problems(PAGES + EVIDENCE_PAGES, lambda page: [
        m.group(0) for m in INTERNAL_REFERENCE.finditer(page.read_text(encoding="utf-8"))])


def _named_paths(page: Path) -> list[str]:
    """Repository paths written as code (`benchmarks/gpu/plan.sh`, `../archive/x/`): a moved
    file breaks them as surely as a link. Relative to the page when they start with ../."""
    paths = CODE_PATH.findall(page.read_text(encoding="utf-8"))
    # `../shared/...` names the build machine's files beside the checkout, not the repository's
    return [str((page.parent if p.startswith("..") else ROOT) / p) for p in paths
            if not re.match(r"(\.\./)+shared/", p)]


def test_every_repository_path_named_in_code_exists():
    assert not _problems(PAGES + EVIDENCE_PAGES, lambda page: [
        p for p in _named_paths(page) if not Path(p).exists()])


def _modelforge_commands(page: Path) -> list[list[str]]:
    """The argument lists of every `modelforge ...` command in the page's bash blocks."""
    commands = []
    for block in FENCE.findall(page.read_text(encoding="utf-8")):
        for line in block.replace("\\\n", " ").splitlines():
            if "modelforge" not in line:
                continue  # also the inner lines of a quoted multi-line body (curl -d '...')
            lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
            lexer.whitespace_split = True
            command: list[str] | None = None
            starts_command = True  # `docker build -t modelforge .` names an image, not the CLI
            for token in lexer:  # the '#' comment is dropped by the lexer
                if token in SHELL_SEPARATORS:
                    command, starts_command = None, True
                    continue
                if command is not None:
                    command.append(token)
                elif starts_command and Path(token).name == "modelforge":
                    command = []
                    commands.append(command)
                starts_command = False
    return commands


def _parse_error(args: list[str]) -> str | None:
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            _parser().parse_args(args)
    except SystemExit:
        return stderr.getvalue().strip().splitlines()[-1]
    return None


def test_the_pages_show_modelforge_commands():
    pages = {p.name for p in PAGES if _modelforge_commands(p)}
    assert "README.md" in pages  # the check below would pass vacuously if the parsing broke


def test_every_documented_command_is_a_real_subcommand_with_real_flags():
    assert not _problems(PAGES, lambda page: [
        (" ".join(args), error) for args in _modelforge_commands(page)
        if (error := _parse_error(args))])


def test_a_wrong_flag_or_command_is_caught():
    assert "unrecognized arguments: --no-such-flag" in _parse_error(["train", "--no-such-flag"])
    assert "invalid choice" in _parse_error(["trian", "config.json"])
    subcommands = next(a for a in _parser()._actions
                       if isinstance(a, argparse._SubParsersAction)).choices
    assert {"train", "run", "bench", "doctor", "demo-model", "export-adapter",
            "export"} <= set(subcommands)


def test_the_field_reference_is_the_schema():
    committed = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert committed == config_reference.render(), (
        "docs/configuration.md is out of date: run "
        "`python -m trainers.tools.config_reference > docs/configuration.md`")


def test_every_result_is_in_an_index_and_every_current_folder_has_its_readme():
    results = ROOT / "benchmarks" / "results"
    for index, current in ((results, True), (results / "archive", False)):
        linked = {Path(t.split("#")[0]).parts[0] for t in _relative_links(index / "README.md")}
        for entry in index.iterdir():
            if entry.name in ("README.md", "archive"):
                continue
            assert entry.name in linked, f"{entry.relative_to(ROOT)} is not in {index.name}'s index"
            # archived folders keep what they had (the first ones: results.md and nvidia-smi.txt)
            assert not (current and entry.is_dir()) or (entry / "README.md").exists(), \
                f"{entry.relative_to(ROOT)} has no README (command, environment, date, GPU)"


def test_troubleshooting_lists_every_error_type_the_code_has():
    """docs/troubleshooting.md is the code's table: a new error type needs its row."""
    from trainers import diagnostics, errors
    types = {cls.error_type for cls in vars(errors).values()
             if isinstance(cls, type) and issubclass(cls, errors.ModelForgeError)
             and cls is not errors.ModelForgeError}
    types |= {rule[0] for rule in diagnostics._TEXT_RULES} | {"internal", "disk_full", "oom"}
    page = (ROOT / "docs" / "troubleshooting.md").read_text(encoding="utf-8")
    assert not [t for t in sorted(types) if f"| `{t}` |" not in page]
