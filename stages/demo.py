"""zivsync-demo: the whole nightly job on the bundled sample organisation, against a local Zivver.

The logic: ``stages/operator/demo.py``.
"""

from __future__ import annotations

from pathlib import Path

import click

from . import cli
from .cli import ExitStatus
from .operator import demo

HELP = """Run the whole nightly job on a sample organisation, against a local Zivver.

\b
Starts a zivsync-sandbox (a local stand-in for Zivver's API) holding the accounts of the
sample organisation Fabrikam as they are today, syncs Fabrikam's directory into it (read from
an LDIF export, the plan shown, then applied), shows that a second run has nothing left to do,
applies a day's changes to the directory (a leaver, a new hire, a new delegate, an added
alias) and syncs exactly those with zivsync run, shows the safety nets (a broken stream refused
with its line number, a truncated one suspending nobody) and writes the report of that last
run. Every stage runs as its own process, each command shown before it runs; no directory, no
Zivver tenant and no shell are needed, and the sandbox is stopped at the end, however the demo
ends. Needs the examples/ folder of a zivsync checkout (a wheel does not ship it). The output
folder is emptied first when it holds an earlier demo; any other folder that is not empty is
refused. Exit 0 when every step did what it says, 1 when one did not.

\b
Example:
  zivsync demo
  zivsync demo --output zivsync-demo
"""


@cli.stage("zivsync-demo", HELP, batch=False)
@click.option("-o", "--output", type=click.Path(file_okay=False), default="demo-output", show_default=True,
              metavar="DIR", help="Write every stream of every run into this folder.")
def command(output: str):
    demo.run_demo(Path(output))
    return ExitStatus.OK
