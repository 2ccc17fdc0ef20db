"""zivsync-sandbox: a local Zivver, speaking Zivver's SCIM API with its quirks, on loopback.

The command only; the server and every rule it enforces are in ``stages/zivver/sandbox_server.py``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from . import cli
from .cli import ExitStatus, ZivsyncError, option
from .zivver import sandbox_server as server

HELP = """Serve a local Zivver SCIM API on 127.0.0.1, faithful to its quirks.

\b
Prints its base URL (http://127.0.0.1:PORT/api/scim/v2) as the first line on standard
output, then serves until stopped (Ctrl+C or SIGTERM). Clients authenticate with the API
key in the environment variable ZIVSYNC_ZIVVER_API_KEY, as they would with Zivver. Start
from an accounts stream (--seed, e.g. a snapshot of your organisation) and keep the state
between runs (--state) to rehearse a sync; add faults to see how a client copes.

\b
Example:
  export ZIVSYNC_ZIVVER_API_KEY=rehearsal-key
  zivsync-sandbox --claimed-domain example.com --seed current.jsonl --state sandbox.json --port 8080
  zivsync-sandbox --claimed-domain example.com --rate-limit 5 --rate-window 1 --drop-after-write-rate 0.1
"""


@cli.stage("zivsync-sandbox", HELP, batch=False)
@option("--port", type=click.IntRange(0, 65535), default=0, show_default=True,
        help="The port to listen on, on 127.0.0.1 only (0 picks a free one; the URL printed says which).")
@option("--claimed-domain", "claimed_domains", multiple=True, required=True, metavar="DOMAIN",
        help="A domain claimed by the organisation (repeatable): addresses elsewhere are refused, as Zivver does.")
@option("--seed", type=click.Path(exists=True, dir_okay=False), metavar="FILE",
        help="Start with the accounts of this accounts stream (a snapshot, or a desired stream); every "
             "address and alias in it must be in a claimed domain, as in Zivver. Ignored when the --state file "
             "exists.")
@option("--state", "state_file", type=click.Path(dir_okay=False), metavar="FILE",
        help="Keep the state in this JSON file: loaded at start when it exists, rewritten (atomically) "
             "after every write. It holds the SSO keys: keep it private.")
@option("--rate-limit", type=click.IntRange(min=0), default=50, show_default=True, metavar="N",
        help="Requests allowed per --rate-window (a token bucket, as Zivver's; 0: no limit).")
@option("--rate-window", type=click.FloatRange(min=0, min_open=True), default=10.0, show_default=True,
        metavar="SECONDS", help="The rate limit's window.")
@option("--fail-rate", type=click.FloatRange(0, 1), default=0.0, show_default=True, metavar="P",
        help="The share of API requests answered 500, having done nothing.")
@option("--drop-rate", type=click.FloatRange(0, 1), default=0.0, show_default=True, metavar="P",
        help="The share of API requests whose connection is closed without an answer, having done nothing.")
@option("--drop-after-write-rate", type=click.FloatRange(0, 1), default=0.0, show_default=True, metavar="P",
        help="The share of API write requests that are applied, then their connection closed without an "
             "answer (a client must not apply them twice).")
@option("--latency", type=click.FloatRange(min=0), default=0.0, show_default=True, metavar="MS",
        help="Delay every API request by this many milliseconds.")
@option("--fault-seed", type=int, metavar="N", help="Seed the choice of faults, to repeat a run exactly.")
@option("--tls-cert", type=click.Path(exists=True, dir_okay=False), metavar="FILE",
        help="Serve https with this certificate (PEM, with its chain), as Zivver does; needs --tls-key.")
@option("--tls-key", type=click.Path(exists=True, dir_okay=False), metavar="FILE",
        help="The private key of --tls-cert (PEM).")
def command(port, claimed_domains, seed, state_file, rate_limit, rate_window, fail_rate, drop_rate,
            drop_after_write_rate, latency, fault_seed, tls_cert, tls_key):
    if bool(tls_cert) != bool(tls_key):
        raise ZivsyncError("--tls-cert and --tls-key go together")
    api_key = os.environ.get(server.API_KEY_VARIABLE, "")
    if not api_key.strip():
        raise ZivsyncError(f"set the API key clients must present in the environment variable {server.API_KEY_VARIABLE}")
    server.serve(port, claimed_domains, seed, Path(state_file) if state_file else None, api_key.strip(),
                 server.TokenBucket(rate_limit, rate_window),
                 server.Faults(fail_rate, drop_rate, drop_after_write_rate, fault_seed), latency / 1000, _announce,
                 (tls_cert, tls_key) if tls_cert else None)
    return ExitStatus.OK


def _announce(url: str) -> None:
    click.echo(url)  # the first line on stdout: how a script learns the port
    sys.stdout.flush()
