"""`--help` as the specification of the command line: every option of every command, whichever
package adds it, says what it does and what it defaults to; `train --help` groups its options and
reads each default from `TrainConfig`; and no help loads torch or another heavy package."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import subprocess
import sys
from collections.abc import Iterator

import pytest

import clipforge
from clipforge.cli import build_parser, main
from clipforge.training.config import OPTION_GROUPS, TrainConfig

# Packages that cost time to import (torch alone takes seconds) or belong to an extra: none may load for --help.
HEAVY_MODULES = ("torch", "numpy", "PIL", "safetensors", "transformers", "tokenizers", "huggingface_hub", "faiss",
                 "sklearn", "scipy", "matplotlib", "tqdm", "fastapi", "starlette", "pydantic", "uvicorn", "httpx",
                 "cairosvg", "emoji", "onnxruntime", "open_clip")


def commands(parser: argparse.ArgumentParser,
             path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every (sub)command's words and parser, the top level first."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, subparser in action.choices.items():
                yield from commands(subparser, (*path, name))


def shown_help(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    """The help line of `action` as `--help` prints it (defaults filled in), unwrapped."""
    return parser._get_formatter()._expand_help(action) if action.help else ""


def in_required_group(parser: argparse.ArgumentParser, action: argparse.Action) -> bool:
    return any(group.required and action in group._group_actions for group in parser._mutually_exclusive_groups)


def undescribed(parser: argparse.ArgumentParser) -> list[str]:
    """The parser's arguments that lack a description, and its options that take a value but do not
    say their default (a required option has none to say)."""
    missing = []
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)):
            continue
        name = "/".join(action.option_strings) or action.dest
        text = shown_help(parser, action)
        if not text.strip() or action.help == argparse.SUPPRESS:
            missing.append(f"{name}: no description")
            continue
        takes_value = action.option_strings and action.nargs != 0
        has_default = not action.required and not in_required_group(parser, action)
        if (takes_value and has_default or isinstance(action, argparse.BooleanOptionalAction)) and "default" not in text:
            missing.append(f"{name}: no default in {text!r}")
    return missing


def test_every_option_of_every_command_has_a_description_and_its_default():
    found = {" ".join(path): undescribed(parser) for path, parser in commands(build_parser())}
    assert {"train", "eval", "search", "index build", "data shapes", "convert", "tokenize", "serve"} <= set(found)
    assert {command: missing for command, missing in found.items() if missing} == {}


def test_every_command_is_described_in_its_parents_help():
    for path, parser in commands(build_parser()):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                described = {choice.dest for choice in action._choices_actions if choice.help}
                assert described == set(action.choices), " ".join(path)


def test_the_defaults_that_help_shows_are_the_defaults_the_commands_use():
    parser = build_parser()
    options = {" ".join(path): {action.dest: shown_help(sub, action) for action in sub._actions}
               for path, sub in commands(parser)}
    assert "(default: 20)" in options["search"]["k"]
    assert "(default: 8000)" in options["serve"]["port"]
    assert "(default: runs/eval)" in options["eval"]["output"]
    assert "(default: native)" in options["convert"]["to"]
    from clipforge.search import build_index, find_duplicates  # build_index's own defaults, shown by the CLI

    defaults = {name: parameter.default for name, parameter in inspect.signature(build_index).parameters.items()}
    for name in ("batch_size", "workers", "ann_threshold"):
        assert f"(default: {defaults[name]})" in options["index build"][name]
    threshold = inspect.signature(find_duplicates).parameters["threshold"].default
    assert f"(default: {threshold})" in options["dedup"]["threshold"]


def test_train_help_groups_its_options_in_order():
    train = dict(commands(build_parser()))[("train",)]
    titles = [group.title for group in train._action_groups]
    assert titles[-len(OPTION_GROUPS):] == list(OPTION_GROUPS)
    where = {action.dest: group.title for group in train._action_groups for action in group._group_actions}
    for option in dataclasses.fields(TrainConfig):
        assert where[option.name] == option.metadata["group"], option.name
    assert where["resume"] == "checkpoints"


def test_train_help_reads_each_default_from_the_dataclass():
    train = dict(commands(build_parser()))[("train",)]
    helps = {action.dest: shown_help(train, action) for action in train._actions}
    defaults = TrainConfig()
    for option in dataclasses.fields(TrainConfig):
        value = getattr(defaults, option.name)
        if option.metadata["shown"] is not None:
            expected = option.metadata["shown"]
        elif isinstance(value, bool):
            expected = "on" if value else "off"
        elif isinstance(value, list):
            expected = " ".join(value)
        else:
            expected = str(value)
        assert helps[option.name].endswith(f"(default: {expected})"), option.name
    assert "default: 512" in helps["batch_size"] and "default: forge-cnn-ngram" in helps["model"]


def test_train_help_prints_every_group_with_its_options(capsys):
    with pytest.raises(SystemExit) as done:
        main(["train", "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    positions = [text.index(f"\n{title}:\n") for title in OPTION_GROUPS]
    assert positions == sorted(positions)
    assert "--batch-size" in text[positions[2]:positions[3]] and "--precision" in text[positions[3]:positions[4]]


def test_version_prints_the_package_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"clipforge {clipforge.__version__}"


def test_no_help_imports_a_heavy_module():
    """Every --help, asked in one fresh interpreter, as the `clipforge` program is."""
    script = f"""
import contextlib, io, json, sys
from clipforge.cli import main
paths = {json.dumps([list(path) for path, _ in commands(build_parser())])}
for path in paths:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
        main([*path, "--help"])
print(json.dumps(sorted({{name.partition(".")[0] for name in sys.modules}} & set({list(HEAVY_MODULES)!r}))))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


def test_the_program_answers_help_without_a_heavy_module():
    script = ("import runpy, sys\nsys.argv = ['clipforge', '--help']\n"
              "try:\n    runpy.run_module('clipforge.cli', run_name='__main__')\nexcept SystemExit:\n    pass\n"
              f"print(sorted({{name.partition('.')[0] for name in sys.modules}} & set({list(HEAVY_MODULES)!r})), "
              "file=sys.stderr)")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "usage: clipforge" in result.stdout and result.stderr.strip() == "[]"
