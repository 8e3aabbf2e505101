"""The README against the code: every `superkern ...` command line in its shell blocks parses
with the real CLI, every `--option` it names after `superkern CMD` exists for that command, and
every call and import in its Python blocks names functions and keyword arguments that exist.
Docs drift silently otherwise (an option renamed, a keyword dropped)."""
from __future__ import annotations

import ast
import importlib
import inspect
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from superkern.cli import _subparsers, build_parser

README = Path(__file__).resolve().parent.parent / "README.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)


def _blocks(*langs: str) -> list[tuple[int, str]]:
    """(first line number, body) of each fenced block in one of ``langs``."""
    text = README.read_text(encoding="utf-8")
    return [(text.count("\n", 0, m.start(2)) + 1, m.group(2)) for m in FENCE.finditer(text)
            if m.group(1) in langs]


def _shell_commands() -> list[tuple[int, list[str]]]:
    """(line, argv after 'superkern') of each superkern command in the shell blocks; a line
    may chain several with &&. ``[X]`` (an optional argument in the docs) is taken as X."""
    out = []
    for first, body in _blocks("bash", "sh", "console"):
        for k, line in enumerate(body.splitlines()):
            for part in line.split("&&"):
                words = shlex.split(re.sub(r"\[([^\]\s]+)\]", r"\1", part), comments=True)
                if words[:1] == ["superkern"]:
                    out.append((first + k, words[1:]))
    return out


COMMANDS = _shell_commands()


def test_readme_is_built_from_its_sections():
    """README.md is generated (scripts/build_readme.sh): an edit of README.md alone would be
    lost at the next build, and an unbuilt section edit never reaches readers."""
    res = subprocess.run(["bash", str(README.parent / "scripts" / "build_readme.sh"), "--check"],
                         capture_output=True, text=True, env={**os.environ,
                                                              "PYTHON": sys.executable})
    assert res.returncode == 0, res.stderr
    text = README.read_text(encoding="utf-8")
    assert "## Contents" in text and "(#reproducing-the-paper)" in text


def test_the_readme_shows_commands_of_every_subcommand():
    shown = {argv[0] for _, argv in COMMANDS if argv}
    assert len(COMMANDS) >= 30, len(COMMANDS)  # the extraction itself works
    assert {"probe", "compare", "sweep", "fit", "figures"} <= shown, shown


@pytest.mark.parametrize("line, argv", COMMANDS, ids=[f"L{n}" for n, _ in COMMANDS])
def test_every_shell_command_in_the_readme_parses(line, argv, capsys):
    try:
        args = build_parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"README line {line}: superkern {' '.join(argv)}\n"
                    f"{capsys.readouterr().err}")
    assert getattr(args, "func", None), f"README line {line}: no subcommand"


def test_every_option_named_after_a_subcommand_exists():
    """Inline mentions too (`superkern probe --corpus`, `superkern fit A --against B`)."""
    text = README.read_text(encoding="utf-8")
    subs = _subparsers(build_parser())
    missing = []
    for m in re.finditer(r"superkern (\w[\w-]*)((?: [^`\n#|]*)?)", text):
        cmd, rest = m.group(1), m.group(2)
        if cmd not in subs:
            continue
        known = {s for a in subs[cmd]._actions for s in a.option_strings}
        for opt in re.findall(r"(?<![\w-])(--[a-z][\w-]*)", rest.split("&&")[0]):
            if opt not in known:
                missing.append(f"superkern {cmd} ... {opt}")
    assert not missing, sorted(set(missing))


def _resolve(dotted: str):
    """The object named by a dotted path under superkern (module attributes or submodules)."""
    parts = dotted.split(".")
    obj = importlib.import_module(parts[0])
    for i, name in enumerate(parts[1:], 1):
        if hasattr(obj, name):
            obj = getattr(obj, name)
        else:
            obj = importlib.import_module(".".join(parts[:i + 1]))
    return obj


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return None if base is None else f"{base}.{node.attr}"
    return None


PY_BLOCKS = _blocks("python")


def test_the_readme_has_python_examples():
    assert len(PY_BLOCKS) >= 5, len(PY_BLOCKS)


@pytest.mark.parametrize("line, body", PY_BLOCKS, ids=[f"L{n}" for n, _ in PY_BLOCKS])
def test_python_examples_name_real_functions_and_keywords(line, body):
    """Imports resolve, and each call of a superkern function passes only keywords its
    signature takes (compiled functions: only that they exist)."""
    tree = ast.parse(body)
    names: dict[str, str] = {"superkern": "superkern"}   # local name -> dotted path
    problems = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("superkern"):
            for a in node.names:
                names[a.asname or a.name] = f"{node.module}.{a.name}"
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        dotted = _dotted(node.func)
        if dotted is None or dotted.split(".")[0] not in names:
            continue
        head, _, tail = dotted.partition(".")
        path = names[head] + ("." + tail if tail else "")
        if path.startswith("superkern._C"):
            pytest.importorskip("superkern._C")
        try:
            fn = _resolve(path)
        except (ImportError, AttributeError) as exc:
            problems.append(f"{path}: {exc}")
            continue
        try:
            sig = inspect.signature(fn)
        except (TypeError, ValueError):  # a compiled function
            continue
        params = sig.parameters.values()
        if any(p.kind is p.VAR_KEYWORD for p in params):
            continue
        takes = {p.name for p in params if p.kind is not p.POSITIONAL_ONLY}
        problems += [f"{path}(... {kw.arg}=)" for kw in node.keywords
                     if kw.arg is not None and kw.arg not in takes]
    for name, path in names.items():
        if name != "superkern":
            try:
                _resolve(path)
            except (ImportError, AttributeError) as exc:
                problems.append(f"import {path}: {exc}")
    assert not problems, f"README line {line}: {problems}"
