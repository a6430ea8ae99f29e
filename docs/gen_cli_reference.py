"""Write docs/reference/cli.md from the argparse parser that ``crowdsort`` runs, and
docs/reference/model-files.md from the model registry (analysis/models/files.py).

    python docs/gen_cli_reference.py          # rewrites both pages

tests/test_docs.py fails when a committed page differs from what this writes, so the pages
cannot drift from the code. Help texts, choices and defaults come from the parser itself,
formatted by the same DefaultsFormatter that ``--help`` uses, at a fixed width (the usage lines
would otherwise follow the terminal's).
"""
from __future__ import annotations

import argparse
import html
import re
import sys
from pathlib import Path

PAGE = Path(__file__).resolve().parent / "reference" / "cli.md"
MODELS_PAGE = PAGE.parent / "model-files.md"
WIDTH = 100  # usage lines wrap here, whatever the terminal

HEADER = """\
# Command-line reference

Generated from the parser in `analysis/cli.py` by `python docs/gen_cli_reference.py`;
do not edit by hand (`tests/test_docs.py` fails when this page and the parser differ).
Every command also prints this with `--help`. `-q` and `-v` may go before or after the command.
"""


def _text(s: str) -> str:
    """Help text as Markdown that shows as written: no HTML, no emphasis, no links."""
    s = html.escape(" ".join(s.split()), quote=False)
    return re.sub(r"([\\`*_\[\]])", r"\\\1", s)


def _formatter(parser: argparse.ArgumentParser) -> argparse.HelpFormatter:
    return parser.formatter_class(prog=parser.prog, width=WIDTH)


def _usage(parser: argparse.ArgumentParser) -> str:
    f = _formatter(parser)
    f.add_usage(parser.usage, parser._actions, parser._mutually_exclusive_groups, prefix="")
    return f.format_help().strip()


def _invocation(f: argparse.HelpFormatter, action: argparse.Action) -> str:
    return f._format_action_invocation(action)


def _subcommands(parser: argparse.ArgumentParser):
    """(name, help, parser) of each subcommand, in the order they were added, aliases once."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            seen = set()
            for name, sub in action.choices.items():
                if id(sub) in seen:
                    continue
                seen.add(id(sub))
                yield name, helps.get(name) or "", sub


def _section(parser: argparse.ArgumentParser, title: str, level: int) -> list[str]:
    out = [f"{'#' * level} {title}", ""]
    if parser.description:
        out += [_text(parser.description), ""]
    out += ["```text", _usage(parser), "```", ""]
    f = _formatter(parser)
    positionals = [a for a in parser._actions if not a.option_strings and a.help is not argparse.SUPPRESS
                   and not isinstance(a, argparse._SubParsersAction)]
    options = [a for a in parser._actions if a.option_strings and a.help is not argparse.SUPPRESS]
    for heading, actions in (("Arguments", positionals), ("Options", options)):
        if not actions:
            continue
        out += [f"**{heading}**", ""]
        for a in actions:
            help_text = f._expand_help(a) if a.help else ""
            out.append(f"- `{_invocation(f, a)}`" + (f": {_text(help_text)}" if help_text else ""))
        out.append("")
    subs = list(_subcommands(parser))
    if subs:
        out += ["**Commands**", ""]
        out += [f"- `{name}`" + (f": {_text(h)}" if h else "") for name, h, _ in subs]
        out.append("")
        for name, _, sub in subs:
            out += _section(sub, f"`{sub.prog}`", min(level + 1, 4))
    return out


def render() -> str:
    """The whole page, from ``crowdsort.cli.build_parser()``."""
    from crowdsort.cli import build_parser

    parser = build_parser()
    lines = _section(parser, "`crowdsort`", 2)
    return HEADER + "\n" + "\n".join(lines).rstrip() + "\n"


MODELS_HEADER = """\
# Model files

Generated from `analysis/models/files.py` by `python docs/gen_cli_reference.py`; do not edit
by hand. Every file is checked against its SHA-256 when installed (`crowdsort models verify`
checks it again). `crowdsort models list` shows the same rows with what is installed where.
How to install them, offline too: [Models](../guides/models.md).
"""


def _mb(size: int | None) -> str:
    return f"{size / 1e6:.1f} MB" if size else "?"


def render_models() -> str:
    """The model registry as tables: each file's source, SHA-256, licence and override variable."""
    from crowdsort.models.files import ARCFACE_PACK_FILES, MODEL_FILES

    out = [MODELS_HEADER, "## Files", ""]
    for key, m in MODEL_FILES.items():
        sources = []
        if m.package:
            sources.append(f"an installed Python package {m.package} ({m.hint})" if m.hint
                           else f"an installed Python package {m.package}")
        if m.url:
            sources.append(m.url)
        if m.npm:
            sources.append(f"npm package {m.npm.spec} (tarball SHA-256 {m.npm.tarball_sha256}), member {m.npm.member}")
        if m.wheel:
            sources.append(f"PyPI wheel {m.wheel.filename} (SHA-256 {m.wheel.wheel_sha256}), member {m.wheel.member}; "
                           f"fetched by: {m.wheel.command}")
        out += [f"### `{key}`", "", _text(m.description or m.kind), "",
                f"- kind: {_text(m.kind)}; file `{m.filename}`, {_mb(m.size)}",
                f"- SHA-256: `{m.sha256}`",
                f"- licence: {_text(m.licence)}",
                "- where it is looked for after `$" + m.env + "` and the cache, in order: " + ("; ".join(_text(x) for x in sources) or "none"),
                ""]
    out += ["## ArcFace packs (insightface)", "",
            "Installed by `crowdsort models install NAME` into `$CROWDSORT_INSIGHTFACE_HOME` "
            "(default `~/.insightface/models`).", ""]
    for key, p in ARCFACE_PACK_FILES.items():
        out += [f"### `{key}`", "", _text(p.description), "",
                f"- zip: {_text(p.url)}, {_mb(p.size)}", f"- SHA-256 of the zip: `{p.sha256}`",
                f"- licence: {_text(p.licence)}", ""]
    return "\n".join(out).rstrip() + "\n"


PAGES = {PAGE: render, MODELS_PAGE: render_models}

if __name__ == "__main__":
    for page, make in PAGES.items():
        page.parent.mkdir(parents=True, exist_ok=True)
        page.write_text(make(), encoding="utf-8")
        print(f"wrote {page}", file=sys.stderr)
