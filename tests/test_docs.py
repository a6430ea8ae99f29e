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
    from crowdsort.cli import build_parser

    page = load_generator().render()
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "==SUPPRESS==" or a.__class__.__name__ == "_SubParsersAction")
    for name, cmd in sub.choices.items():
        assert f"`crowdsort {name}`" in page, name
        for action in cmd._actions:
            for opt in action.option_strings:
                assert opt in page, (name, opt)
