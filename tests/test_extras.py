"""The core and its extras: with the optional packages missing, `import clipforge`, every `--help`
and training work, and a command that needs an extra names the `pip install` that brings it.

Each check runs in a fresh interpreter whose import system finds none of the extras' packages, as on
a machine where only `pip install clipforge` was run."""

from __future__ import annotations

import ast
import json
import pickle
import re
import subprocess
import sys
import textwrap
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

from clipforge.core.extras import MissingExtraError, extra_imports, require

ROOT = Path(__file__).parents[1]
EXTRA_PACKAGES = ("cairosvg", "emoji", "faiss", "fastapi", "starlette", "uvicorn", "sklearn", "matplotlib", "onnx",
                  "onnxscript", "onnxruntime")

WITHOUT_EXTRAS = f"""
import sys

class WithoutExtras:
    '''Wraps an import finder so that it finds none of the extras' packages, as if they were not
    installed, and notes which ones were looked for.'''
    asked = []

    def __init__(self, finder):
        self.finder = finder

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {EXTRA_PACKAGES!r}:
            WithoutExtras.asked.append(name)
            return None
        return self.finder.find_spec(name, path, target)

    def __getattr__(self, attribute):
        return getattr(self.finder, attribute)

sys.meta_path[:] = [WithoutExtras(finder) for finder in sys.meta_path]
"""


def run_without_extras(code: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", WITHOUT_EXTRAS + textwrap.dedent(code)], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def run_command_without_extras(*argv: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return run_without_extras(f"from clipforge.cli import main\nsys.exit(main({list(argv)!r}))", cwd)


def test_the_core_library_imports_without_any_extra():
    result = run_without_extras("""
        import clipforge
        from clipforge import *  # every public name, which imports the core's modules
        import clipforge.data, clipforge.data.builtin, clipforge.data.prepare
        import clipforge.evaluation.suite, clipforge.training.trainer
        print(WithoutExtras.asked)
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_import_clipforge_loads_no_extra_even_where_installed():
    result = subprocess.run([sys.executable, "-c", "import sys, clipforge; from clipforge import *; "
                             f"print([name for name in {EXTRA_PACKAGES!r} if name in sys.modules])"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_every_help_works_without_extras_and_without_torch():
    result = run_without_extras("""
        import argparse, contextlib, io, json
        from clipforge.cli import build_parser

        def commands(parser, path=()):
            yield path
            for action in parser._actions:
                if isinstance(action, argparse._SubParsersAction):
                    for name, subparser in action.choices.items():
                        yield from commands(subparser, (*path, name))

        shown = []
        for path in commands(build_parser()):
            with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.suppress(SystemExit):
                build_parser().parse_args([*path, "--help"])
            shown.append([" ".join(path), out.getvalue().startswith("usage: clipforge")])
        print(json.dumps({"shown": shown, "torch": "torch" in sys.modules, "asked": WithoutExtras.asked}))
    """)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    commands = {command for command, _ in report["shown"]}
    assert {"", "serve", "index build", "search", "dedup", "data prepare", "train", "eval"} <= commands
    assert all(shown for _, shown in report["shown"])
    assert report["torch"] is False and report["asked"] == []


def test_help_runs_as_a_program_without_extras():
    result = subprocess.run([sys.executable, "-c", WITHOUT_EXTRAS + "import runpy\nsys.argv = ['clipforge', '--help']\n"
                             "runpy.run_module('clipforge.cli', run_name='__main__')"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "usage: clipforge" in result.stdout and "serve" in result.stdout


@pytest.mark.parametrize(("argv", "extra"), [
    (["serve"], "app"),
    (["index", "build", "photos", "--model", "ViT-B/32"], "search"),
    (["index", "update"], "search"),
    (["search", "a red bicycle"], "search"),
    (["dedup"], "search"),
    (["data", "prepare"], "data"),
    (["eval", "--model", "ViT-B/32", "--dataset", "shapes"], "eval"),
    (["export", "tiny-vit", "--onnx", "exported"], "onnx"),
])
def test_a_command_without_its_extra_names_the_pip_install(argv, extra, tmp_path):
    result = run_command_without_extras(*argv, cwd=tmp_path)
    command = " ".join(argv[:2] if argv[0] in ("index", "data") else argv[:1])
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith(f"clipforge {command}: ") and "Traceback" not in result.stderr
    assert f"needs the {extra} extra" in result.stderr and f"pip install 'clipforge[{extra}]'" in result.stderr
    assert list(tmp_path.iterdir()) == []  # it failed before doing anything


def test_training_without_matplotlib_writes_its_report_without_the_plot(tmp_path):
    model = {"embed_dim": 16, "activation": "gelu",
             "vision": {"image_size": 32, "layers": 1, "width": 16, "patch_size": 8, "heads": 2},
             "text": {"context_length": 16, "vocab_size": 600, "width": 16, "layers": 1, "heads": 2}}
    (tmp_path / "model.json").write_text(json.dumps(model))
    result = run_without_extras("""
        from clipforge.cli import main
        for argv in (["data", "shapes", "train", "--count", "64", "--image-size", "32"],
                     ["data", "shapes", "heldout", "--count", "16", "--split", "heldout", "--image-size", "32"],
                     ["train", "--model", "model.json", "--vocab-size", "600", "--train-data", "train",
                      "--eval-data", "heldout", "--steps", "2", "--batch-size", "16", "--warmup-steps", "1",
                      "--precision", "fp32", "--output-dir", "run", "--no-progress"]):
            assert main(argv) == 0, argv
        print(WithoutExtras.asked)
    """, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "matplotlib" in result.stdout  # the report asked for it and went on without it
    report = (tmp_path / "run" / "report.md").read_text()
    assert "final loss" in report and "pip install 'clipforge[eval]'" in report and "![curves]" not in report
    assert not (tmp_path / "run" / "curves.png").exists()
    assert (tmp_path / "run" / "model" / "model.safetensors").is_file()


def test_require_returns_the_module_or_names_the_extra():
    assert require("json", "eval", "reading JSON") is json
    with pytest.raises(MissingExtraError) as caught:
        require("clipforge_no_such_package.plots", "eval", "the plots")
    error = caught.value
    assert isinstance(error, ImportError) and error.extra == "eval" and error.name == "clipforge_no_such_package"
    assert str(error) == ("the plots needs the eval extra (clipforge_no_such_package is not installed): "
                          "pip install 'clipforge[eval]'")
    assert str(pickle.loads(pickle.dumps(error))) == str(error)  # it can come back from a worker process


def test_a_missing_clipforge_module_is_a_bug_not_a_missing_extra():
    with pytest.raises(ModuleNotFoundError) as caught, extra_imports("eval", "the plots"):
        import clipforge.no_such_module  # noqa: F401
    assert not isinstance(caught.value, MissingExtraError)


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _declared_requirements() -> dict[str, set[str]]:
    project = _pyproject()
    groups = {"core": project["dependencies"], **project["optional-dependencies"]}
    return {group: {_requirement_name(requirement) for requirement in requirements}
            for group, requirements in groups.items()}


def _requirement_name(requirement: str) -> str:
    return re.split(r"[<>=!~\[;\s]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_every_package_the_library_imports_is_a_declared_dependency():
    groups = _declared_requirements()
    declared = set().union(*(packages for group, packages in groups.items() if group not in ("test", "bench")))
    distributions = packages_distributions()
    undeclared = {}
    for path in (ROOT / "src" / "clipforge").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for package in {name.partition(".")[0] for name in names} - set(sys.stdlib_module_names) - {"clipforge"}:
                owners = {owner.lower().replace("_", "-") for owner in distributions.get(package, [package])}
                if not owners & declared:
                    undeclared[package] = str(path.relative_to(ROOT))
    assert undeclared == {}


def test_the_core_leaves_each_feature_package_to_its_extra():
    groups = _declared_requirements()
    features = {"data": {"emoji", "cairosvg"}, "search": {"faiss-cpu"},
                "app": {"fastapi", "uvicorn", "python-multipart"}, "eval": {"scikit-learn", "matplotlib"},
                "hub": {"huggingface-hub"}, "onnx": {"onnx", "onnxscript", "onnxruntime"}}
    for extra, packages in features.items():
        assert packages <= groups[extra] and not packages & groups["core"], extra
    optional = _pyproject()["optional-dependencies"]
    assert "clipforge[search]" in optional["app"]  # the server searches an --index
    assert optional["all"] == [f"clipforge[{','.join(features)}]"] and "clipforge[all]" in optional["test"]
