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
    committed = gen.PAGE.read_text(encoding="utf-8")
    if committed != gen.render():
        raise AssertionError("docs/reference/cli.md differs from the parser in analysis/cli.py: "
                             "run `python docs/gen_cli_reference.py` and commit the page")


def test_cli_reference_lists_every_command_and_option():
    # the page is walked from the parser, not written by hand: every subcommand and option shows
    from crowdsort.cli import build_parser

    page = load_generator().render()
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "==SUPPRESS==" or a.__class__.__name__ == "_SubParsersAction")
    for name, cmd in sub.choices.items():
        assert f"`crowdsort {name}`" in page, name
        for action in cmd._actions:
            for opt in action.option_strings:
                assert opt in page, (name, opt)
