"""zivsync: the umbrella command; ``zivsync diff …`` is ``zivsync-diff …``.

Also where every executable starts (the console scripts in pyproject.toml point here): it is
the one module that knows all the commands, and hands that list to the command base, which
checks a config file's tables against it without importing the commands itself.
"""

from __future__ import annotations

import sys

import click

from . import (
    __version__,
    check,
    cli,
    diff,
    extract_exchange,
    extract_exo,
    extract_ldap,
    normalize,
    push,
    report,
    run,
    sandbox,
    snapshot,
    validate,
)

# The nightly job and its tools first, then the stages in pipeline order
STAGES = [run.command, check.command, report.command, extract_ldap.command, extract_exo.command,
          extract_exchange.command, normalize.command, diff.command, validate.command, snapshot.command, push.command,
          sandbox.command]


@click.group(context_settings=cli.CONTEXT_SETTINGS, help="""Keep a Zivver organisation in step with its directory.

\b
Every sub-command is also an executable of its own (zivsync diff == zivsync-diff).
Run 'zivsync COMMAND --help' for the options and an example of each.

\b
Example:
  zivsync check --config zivsync.toml           # can every source and Zivver be reached?
  zivsync run --config zivsync.toml             # a dry run into runs/<UTC time>/
  zivsync report runs/20261127T020000Z --html report.html
  zivsync normalize -i ldap.jsonl --claimed-domain example.com | zivsync diff --current current.jsonl ...
""")
@click.version_option(__version__, "--version", prog_name="zivsync", message="%(prog)s %(version)s")
def group():
    pass


for stage_command in STAGES:
    group.add_command(stage_command, cli.section_name(stage_command))


def main() -> None:
    sys.exit(cli.run(group, prog="zivsync", family=STAGES))


# The executables, one per command (pyproject.toml's [project.scripts])
run_main = cli.entry_point(run.command, STAGES)
check_main = cli.entry_point(check.command, STAGES)
report_main = cli.entry_point(report.command, STAGES)
extract_ldap_main = cli.entry_point(extract_ldap.command, STAGES)
extract_exo_main = cli.entry_point(extract_exo.command, STAGES)
extract_exchange_main = cli.entry_point(extract_exchange.command, STAGES)
normalize_main = cli.entry_point(normalize.command, STAGES)
diff_main = cli.entry_point(diff.command, STAGES)
validate_main = cli.entry_point(validate.command, STAGES)
snapshot_main = cli.entry_point(snapshot.command, STAGES)
push_main = cli.entry_point(push.command, STAGES)
sandbox_main = cli.entry_point(sandbox.command, STAGES)

if __name__ == "__main__":
    main()
