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


def _metavar(action: argparse.Action) -> str:
    if action.metavar is not None:
        return action.metavar
    if action.choices is not None and not isinstance(action, argparse._SubParsersAction):
        return "{" + ",".join(map(str, action.choices)) + "}"
    return action.dest if not action.option_strings else action.dest.upper()


def _takes_value(action: argparse.Action) -> bool:
    return action.nargs != 0


def _args(action: argparse.Action) -> str:
    """The value(s) an action takes, spelled as argparse spells them (``[X ...]`` for ``*``)."""
    m = _metavar(action)
    n = action.nargs
    if n is None:
        return m
    if n == "?":
        return f"[{m}]"
    if n == "*":
        return f"[{m} ...]"
    if n == "+":
        return f"{m} [{m} ...]"
    if isinstance(n, int):
        return " ".join([m] * n)
    return m


def _invocation(action: argparse.Action) -> str:
    """``-d, --dataset DATASET``: written here, not by argparse, whose spelling of it changed in
    Python 3.13 (the page must be the same whichever Python makes it)."""
    if not action.option_strings:
        return _metavar(action)
    names = ", ".join(action.option_strings)
    return f"{names} {_args(action)}" if _takes_value(action) else names


def _usage_part(action: argparse.Action) -> str:
    if isinstance(action, argparse._SubParsersAction):
        return f"{_metavar(action)} ..."
    if not action.option_strings:
        return _args(action)
    if isinstance(action, argparse.BooleanOptionalAction):
        return " | ".join(action.option_strings)
    text = action.option_strings[0] + (f" {_args(action)}" if _takes_value(action) else "")
    return text


def _usage(parser: argparse.ArgumentParser) -> str:
    """The synopsis, wrapped at WIDTH: required options bare, the others in brackets, mutually
    exclusive ones joined by |, positionals last (argparse's order)."""
    groups = {id(a): g for g in parser._mutually_exclusive_groups for a in g._group_actions}
    done, parts = set(), []
    actions = [a for a in parser._actions if a.help is not argparse.SUPPRESS]
    for a in sorted(actions, key=lambda a: not a.option_strings):  # options first, as argparse does
        if id(a) in done:
            continue
        group = groups.get(id(a))
        members = [m for m in group._group_actions if m.help is not argparse.SUPPRESS] if group else [a]
        done.update(id(m) for m in members)
        text = " | ".join(_usage_part(m) for m in members)
        required = group.required if group else (a.required or not a.option_strings)
        if not a.option_strings and a.nargs in ("?", "*"):
            required = True  # its brackets come with its nargs
        parts.append(text if required and len(members) == 1 else (f"({text})" if required else f"[{text}]"))
    lines, line = [], parser.prog
    indent = " " * (len(parser.prog) + 1)
    for part in parts:
        if len(line) + 1 + len(part) > WIDTH and line.strip():
            lines.append(line)
            line = indent + part
        else:
            line += " " + part
    lines.append(line)
    return "\n".join(lines)


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
    f = _formatter(parser)  # for the help texts only: DefaultsFormatter adds each default
    positionals = [a for a in parser._actions if not a.option_strings and a.help is not argparse.SUPPRESS
                   and not isinstance(a, argparse._SubParsersAction)]
    options = [a for a in parser._actions if a.option_strings and a.help is not argparse.SUPPRESS]
    for heading, actions in (("Arguments", positionals), ("Options", options)):
        if not actions:
            continue
        out += [f"**{heading}**", ""]
        for a in actions:
            help_text = f._expand_help(a) if a.help else ""
            out.append(f"- `{_invocation(a)}`" + (f": {_text(help_text)}" if help_text else ""))
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
