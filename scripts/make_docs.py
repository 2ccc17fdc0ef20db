#!/usr/bin/env python3
"""Write docs/commands.md, the command reference, from every command's --help (``make docs``).

tests/test_docs.py fails when the file is out of date, so that the reference never drifts from
what the executables say about themselves.

Usage::

    python scripts/make_docs.py          # (re)write docs/commands.md
    python scripts/make_docs.py --check  # exit 1 when docs/commands.md is out of date
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

REPO = Path(__file__).resolve().parent.parent
TARGET = REPO / "docs" / "commands.md"
WIDTH = 100


def help_text(command: click.Command, name: str) -> str:
    """A command's --help as a terminal 100 columns wide shows it, whatever this one is."""
    context = click.Context(command, info_name=name, terminal_width=WIDTH, max_content_width=WIDTH)
    return command.get_help(context)


def reference() -> str:
    sys.path.insert(0, str(REPO))
    from stages.umbrella import STAGES, group

    lines = ["# Command reference", "",
             "Generated from each command's `--help` by `scripts/make_docs.py` (`make docs`); do not edit.",
             "Every command is also a sub-command of `zivsync` (`zivsync diff …` is `zivsync-diff …`).", ""]
    lines += [f"- [`{c.name}`](#{c.name})" for c in STAGES] + [""]
    lines += ["## zivsync", "", "```", help_text(group, "zivsync"), "```", ""]
    for command in STAGES:
        lines += [f"## {command.name}", "", "```", help_text(command, command.name), "```", ""]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    text = reference()
    if "--check" in argv:
        if not TARGET.exists() or TARGET.read_text(encoding="utf-8") != text:
            print(f"{TARGET.relative_to(REPO)} is out of date: run make docs", file=sys.stderr)
            return 1
        return 0
    TARGET.parent.mkdir(exist_ok=True)
    TARGET.write_text(text, encoding="utf-8")
    print(f"wrote {TARGET.relative_to(REPO)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
