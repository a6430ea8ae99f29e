"""The documentation's generated pages match the code they document."""
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_generator():
    spec = importlib.util.spec_from_file_location("gen_cli_reference", ROOT / "docs" / "gen_cli_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_reference_is_the_parser():
    gen = load_generator()
    for page, make in gen.PAGES.items():
        if page.read_text(encoding="utf-8") != make():
            raise AssertionError(f"docs/reference/{page.name} differs from the code it is generated from: "
                                 "run `python docs/gen_cli_reference.py` and commit the page")


def test_api_reference_lists_the_public_api():
    # every name `import crowdsort` exports has its entry on the API page, under its real module
    import crowdsort

    page = (ROOT / "docs" / "reference" / "api.md").read_text(encoding="utf-8")
    for name, target in crowdsort._API.items():
        module, attr = target if isinstance(target, tuple) else (target, name)
        assert f"::: crowdsort.{module}.{attr}\n" in page, f"docs/reference/api.md lacks crowdsort.{name}"


def test_cli_reference_lists_every_command_and_option():
    # the page is walked from the parser, not written by hand: every subcommand and option shows
    import argparse

    from crowdsort.cli import build_parser

    page = load_generator().render()

    def walk(parser):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    yield sub
                    yield from walk(sub)

    commands = list(walk(build_parser()))
    assert len(commands) > 10
    for cmd in commands:
        section = page.split(f"`{cmd.prog}`\n", 1)
        assert len(section) == 2, f"no section for {cmd.prog}"
        for action in cmd._actions:
            for opt in action.option_strings:
                assert opt in section[1], (cmd.prog, opt)


def test_readme_is_short_and_runs_what_ci_runs():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    lines = readme.count("\n")
    assert lines <= 150, f"README.md has {lines} lines; move the detail into docs/ (at most 150)"
    # the README's test command ends with the pytest line .ci/run runs, so CI runs what users are told to
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    pytest_line = next(line for line in ci.splitlines() if line.startswith("python -m pytest"))
    assert any(line.startswith("python3 -m venv") and line.endswith(pytest_line) for line in readme.splitlines()), (
        f"README.md's test command does not end with .ci/run's `{pytest_line}`")
    # every page the README links to exists
    import re

    for target in re.findall(r"\]\((docs/[^)#]+)", readme):
        assert (ROOT / target).is_file(), f"README.md links to {target}, which does not exist"
