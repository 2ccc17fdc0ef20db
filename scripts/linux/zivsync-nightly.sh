#!/usr/bin/env bash
# The nightly sync: every stage as its own process, every stream kept in a dated run folder
# ($ZIVSYNC_RUNS/<UTC time>/, with run.log, summary.json and report.html). Run by
# zivsync-nightly.service; by hand: sudo -u zivsync ./zivsync-nightly.sh
# Settings come from the config file; secrets from the environment (EnvironmentFile= of the
# service), never from flags. The exit code is zivsync run's: 3 = a safety limit refused the
# plan, 4 = a server could not be reached.
set -euo pipefail
# cron's PATH is /usr/bin:/bin: find zivsync where pip and pipx put it
export PATH="/usr/local/bin:${HOME:-/nonexistent}/.local/bin:/opt/zivsync/bin:$PATH"
config=${ZIVSYNC_CONFIG:-/etc/zivsync/zivsync.toml}
runs=${ZIVSYNC_RUNS:-/var/lib/zivsync/runs}
exec zivsync-run --config "$config" --apply --runs-dir "$runs" --stage-timeout 7200
