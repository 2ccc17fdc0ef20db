#!/usr/bin/env bash
# The nightly sync, stage by stage, every stream kept in a dated folder (until `zivsync run`
# does this in one command). Run by zivsync-nightly.service; by hand: sudo -u zivsync ./zivsync-nightly.sh
# Settings come from the config file; secrets from the environment (EnvironmentFile= of the
# service), never from flags.
set -euo pipefail
config=${ZIVSYNC_CONFIG:-/etc/zivsync/zivsync.toml}
runs=${ZIVSYNC_RUNS:-/var/lib/zivsync/runs}
run="$runs/$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$run"
exec 2> >(tee -a "$run/log.txt" >&2)
export ZIVSYNC_CONFIG="$config"

zivsync-extract-ldap -o "$run/ldap.jsonl"
zivsync-extract-exo -o "$run/exo.jsonl"
zivsync-normalize -i "$run/ldap.jsonl" -i "$run/exo.jsonl" -o "$run/desired.jsonl"
zivsync-snapshot -o "$run/current.jsonl"
# exit 3: a safety limit refused the plan; nothing is applied, the report is in the log
zivsync-diff -i "$run/desired.jsonl" --current "$run/current.jsonl" -o "$run/plan.jsonl"
zivsync-push -i "$run/plan.jsonl" --apply -o "$run/results.jsonl"
