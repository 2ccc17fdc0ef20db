#!/usr/bin/env python3
"""Write docs/commands.md, the command reference, from every command's --help, and
docs/zivsync.sample.toml, every option of every stage commented out (``make docs``).

tests/test_docs.py fails when the file is out of date, so that the reference never drifts from
what the executables say about themselves.

Usage::

    python scripts/make_docs.py          # (re)write docs/commands.md
    python scripts/make_docs.py --check  # exit 1 when docs/commands.md is out of date
"""

from __future__ import annotations

import enum
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


def _toml_value(param: click.Option, context: click.Context) -> str:
    """The option's default as TOML (a placeholder when it has none)."""
    import json
    default = param.get_default(context, call=False)
    if isinstance(default, enum.Enum):  # click 8.2+: UNSET, no default
        default = None
    if param.multiple:
        return json.dumps(list(default or ()), ensure_ascii=False)
    if isinstance(default, bool) or param.is_flag:
        return "true" if default else "false"
    if isinstance(default, (int, float)) and not isinstance(default, bool):
        return repr(default)
    if default is None:
        if isinstance(param.type, click.Path):  # single quotes: a Windows path's \ stays a \
            return "'FILE'" if param.type.file_okay else "'DIR'"
        return '"…"'
    return json.dumps(str(default), ensure_ascii=False)


def sample_config() -> str:
    """Every option of every stage, commented out with its default, in its stage's table."""
    import textwrap
    sys.path.insert(0, str(REPO))
    from stages import cli
    from stages.umbrella import STAGES

    lines = ["# zivsync configuration: every option of every stage, commented out, with its default.",
             "# Generated from the commands by scripts/make_docs.py (make docs); copy what you need.",
             "#",
             "# Give it with --config FILE or ZIVSYNC_CONFIG. Flags win over environment variables, which win",
             "# over this file. A key at the top level applies to every stage that has that option (e.g.",
             "# claimed_domains); a [stage] table to that stage only. Paths are relative to this file.",
             "# Unknown keys are errors. Secrets never go here: passwords, keys and client secrets come from",
             "# environment variables (ZIVSYNC_LDAP_PASSWORD, ZIVSYNC_ZIVVER_API_KEY, ...) or from the files",
             "# the *_file options name.",
             "#",
             "# Windows paths go in single quotes, which take \\ as it is: runs_dir = 'D:\\zivsync\\runs'. In double",
             "# quotes \\ starts an escape: \"D:\\zivsync\\runs\" is refused, and \"\\r\" would be a carriage return.",
             "# Save the file as UTF-8 (with or without BOM) or UTF-16 (Notepad's \"Unicode\").", ""]
    for command in STAGES:
        context = click.Context(command, info_name=command.name)
        if not cli._config_params(command):  # nothing a config file could set
            continue
        lines += [f"[{cli.section_name(command)}]"]
        for name, param in cli._config_params(command).items():
            help_text = " ".join((param.help or "").split())
            lines += ["# " + row for row in textwrap.wrap(help_text, 96)] or []
            required = "  # required" if param.required else ""
            lines += [f"# {name} = {_toml_value(param, context)}{required}", ""]
    return "\n".join(lines).rstrip() + "\n"


SAMPLE = REPO / "docs" / "zivsync.sample.toml"


def main(argv: list[str]) -> int:
    outputs = {TARGET: reference(), SAMPLE: sample_config()}
    if "--check" in argv:
        stale = [p for p, text in outputs.items() if not p.exists() or p.read_text(encoding="utf-8") != text]
        for path in stale:
            print(f"{path.relative_to(REPO)} is out of date: run make docs", file=sys.stderr)
        return 1 if stale else 0
    TARGET.parent.mkdir(exist_ok=True)
    for path, text in outputs.items():
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path.relative_to(REPO)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
