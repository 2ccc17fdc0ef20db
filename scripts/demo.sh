#!/usr/bin/env bash
# `make demo`: the main job on the bundled sample organisation (examples/, "Fabrikam").
# normalize → diff, then the two safety nets: a broken stream and a truncated one.
set -euo pipefail
cd "$(dirname "$0")/.."
out=demo-output
mkdir -p "$out"
export ZIVSYNC_CONFIG=examples/zivsync.toml   # claimed domains and safety limits

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "1. Check the two directory streams (Active Directory and Exchange)"
zivsync-validate examples/directory-ldap.jsonl examples/directory-exchange.jsonl examples/current.jsonl

step "2. Normalize: directory → the accounts Zivver should have"
zivsync-normalize -i examples/directory-ldap.jsonl -i examples/directory-exchange.jsonl -o "$out/desired.jsonl"

step "3. Diff: desired vs. Zivver's current accounts → the plan to review"
zivsync-diff -i "$out/desired.jsonl" --current examples/current.jsonl --state examples/state -o "$out/plan.jsonl"
echo "plan written to $out/plan.jsonl ($(wc -l < "$out/plan.jsonl") lines)"

step "4. A broken stream is refused with its line number"
if zivsync-validate examples/directory-ldap-broken.jsonl; then
    echo "unexpected: the broken stream validated" >&2; exit 1
fi

step "5. A truncated directory stream never yields a suspension"
zivsync-normalize -i examples/directory-ldap-truncated.jsonl -i examples/directory-exchange.jsonl \
    -o "$out/desired-truncated.jsonl" 2> >(tail -n 3 >&2)
status=0
zivsync-diff -q -i "$out/desired-truncated.jsonl" --current examples/current.jsonl --state examples/state \
    -o "$out/plan-truncated.jsonl" || status=$?
suspensions=$(grep -c '"type":"change","id":"[0-9a-f]*","op":"suspend_user"' "$out/plan-truncated.jsonl" || true)
echo "diff exit code $status (3 = refused by a safety check); suspensions planned: $suspensions"
[ "$status" -eq 3 ] && [ "$suspensions" -eq 0 ]

step "Done: the streams are in $out/"
