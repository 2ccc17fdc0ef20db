"""zivsync: the umbrella command; ``zivsync diff …`` is ``zivsync-diff …``.

Also where every executable starts (the console scripts in pyproject.toml point here): it is
the one module that knows all the commands, and hands that list to the command base, which
checks a config file's tables against it without importing the commands itself.
"""

from __future__ import annotations

import importlib
import sys
from functools import cache

import click

from . import __version__, cli

# The nightly job and its tools first, then the stages in pipeline order. Imported when needed:
# an executable imports its own command only (the whole list when it reads a config file).
MODULES = ("run", "check", "report", "extract_ldap", "extract_exo", "extract_exchange", "normalize", "diff",
           "validate", "snapshot", "push", "sandbox", "demo")


def command_of(module: str) -> click.Command:
    return importlib.import_module(f"{__package__}.{module}").command


@cache
def commands() -> list[click.Command]:
    """Every command, in the order of the list above."""
    return [command_of(module) for module in MODULES]


HELP = """Keep a Zivver organisation in step with its directory.

\b
Every sub-command is also an executable of its own (zivsync diff == zivsync-diff).
Run 'zivsync COMMAND --help' for the options and an example of each.

\b
Example:
  zivsync check --config zivsync.toml           # can every source and Zivver be reached?
  zivsync run --config zivsync.toml             # a dry run into runs/<UTC time>/
  zivsync report runs/20261127T020000Z --html report.html
  zivsync normalize -i ldap.jsonl --claimed-domain example.com | zivsync diff --current current.jsonl ...
"""


@cache
def umbrella() -> click.Group:
    """The ``zivsync`` command, every command under it."""
    group = click.Group(context_settings=cli.CONTEXT_SETTINGS, help=HELP)
    click.version_option(__version__, "--version", prog_name="zivsync", message="%(prog)s %(version)s")(group)
    for command in commands():
        group.add_command(command, cli.section_name(command))
    return group


def __getattr__(name: str):
    """``STAGES`` and ``group``, built when first asked for (docs, tests)."""
    if name == "STAGES":
        return commands()
    if name == "group":
        return umbrella()
    raise AttributeError(name)


def main() -> None:
    sys.exit(cli.run(umbrella(), prog="zivsync", family=commands))


def _executable(module: str):
    def main() -> None:
        sys.exit(cli.run(command_of(module), family=commands))

    return main


# The executables, one per command (pyproject.toml's [project.scripts])
run_main, check_main, report_main = _executable("run"), _executable("check"), _executable("report")
extract_ldap_main, extract_exo_main = _executable("extract_ldap"), _executable("extract_exo")
extract_exchange_main, normalize_main = _executable("extract_exchange"), _executable("normalize")
diff_main, validate_main, snapshot_main = _executable("diff"), _executable("validate"), _executable("snapshot")
push_main, sandbox_main, demo_main = _executable("push"), _executable("sandbox"), _executable("demo")

if __name__ == "__main__":
    main()
