#!/usr/bin/env bash
# `make demo`: the whole nightly job on the bundled sample organisation (examples/, "Fabrikam"),
# against a local zivsync-sandbox standing in for Zivver: no directory and no Zivver tenant needed.
#   1. sync the sample organisation into the sandbox: read its AD from an LDIF export
#      (examples/fabrikam.ldif, as ldifde writes it), plan, then apply
#   2. run again: nothing is left to do
#   3. a day later the directory changed (a leaver, a new hire, a new delegate, an added alias):
#      the nightly job, `zivsync run`, plans (dry run), then applies exactly those
#   5. the report of that last run, on the terminal and as HTML (demo-output/report.html)
#   4. the safety nets: a broken stream is refused with its line number, a truncated one never
#      yields a suspension
set -euo pipefail
cd "$(dirname "$0")/.."
out=demo-output
rm -rf "$out" && mkdir -p "$out"
export ZIVSYNC_CONFIG=examples/zivsync.toml          # claimed domains, AD's base DN, safety limits
export ZIVSYNC_ZIVVER_API_KEY="demo-key-$RANDOM$RANDOM" # the sandbox accepts the key the stages send
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
show() { printf '\033[2m$ %s\033[0m\n' "$*"; "$@"; }  # print a command, then run it

step "Start a local Zivver (zivsync-sandbox), holding Fabrikam's accounts as they are today"
# Fabrikam's Zivver organisation claims three domains; zivsync manages two of them (the config's
# claimed_domains) and leaves fabrikam-legacy.org, and the account Zivver holds there, alone.
zivsync-sandbox --port 0 --seed examples/current.jsonl --rate-limit 1000 --rate-window 1 \
    --claimed-domain fabrikam.example --claimed-domain fabrikam.nl --claimed-domain fabrikam-legacy.org \
    > "$out/sandbox.url" 2> "$out/sandbox.log" &
sandbox=$!
trap 'kill $sandbox 2>/dev/null; wait $sandbox 2>/dev/null || true' EXIT
for _ in $(seq 100); do [ -s "$out/sandbox.url" ] && break; sleep 0.05; done
export ZIVSYNC_ZIVVER_URL=$(head -n 1 "$out/sandbox.url")
echo "Zivver sandbox at $ZIVSYNC_ZIVVER_URL (pid $sandbox)"

# Read Fabrikam's AD from its LDIF export into $out/$1/directory-ldap.jsonl. The base DN and the
# region of phone numbers typed without +31 come from the [extract-ldap] table of the config.
extract() {
    mkdir -p "$out/$1"
    show zivsync-extract-ldap --config "$ZIVSYNC_CONFIG" --ldif examples/fabrikam.ldif -o "$out/$1/directory-ldap.jsonl"
}
sync() {  # one nightly run into $out/$1, reading the ldap stream $2 and the exchange stream $3
    local run="$out/$1" ldap="$2" exchange="$3"
    mkdir -p "$run"
    zivsync-snapshot -q -o "$run/current.jsonl"
    zivsync-normalize -q -i "$ldap" -i "$exchange" -o "$run/desired.jsonl"
    zivsync-diff -i "$run/desired.jsonl" --current "$run/current.jsonl" --state "$out/state" -o "$run/plan.jsonl"
}
apply() {
    zivsync-push -q -i "$out/$1/plan.jsonl" --apply --state "$out/state" -o "$out/$1/results.jsonl" \
        --rate-limit 1000 --rate-window 1
    echo "applied: $(grep -c '"status":"applied"' "$out/$1/results.jsonl") changes (results in $out/$1/results.jsonl)"
}

step "1. First sync: read AD from its LDIF export, snapshot Zivver, normalize with Exchange, diff → the plan to review"
extract run1
zivsync-validate "$out/run1/directory-ldap.jsonl" examples/directory-exchange.jsonl
sync run1 "$out/run1/directory-ldap.jsonl" examples/directory-exchange.jsonl
step "   ...reviewed: apply it"
apply run1

step "2. Run again right away: nothing is left to do"
extract run2
sync run2 "$out/run2/directory-ldap.jsonl" examples/directory-exchange.jsonl

step "3. The next day: a leaver, a new hire, a new delegate, an added alias. The nightly job as one command"
python scripts/demo_change.py "$out/directory-next"
# The nightly config: the directory streams made in step 3 (as a script of your own would make
# them), the account mapping, the run folders beside it. Secrets stay in the environment.
cat > "$out/nightly.toml" <<'TOML'
claimed_domains = ["fabrikam.example", "fabrikam.nl"]
state_dir = "state"

[run]
directories = ["directory-next/directory-ldap.jsonl", "directory-next/directory-exchange.jsonl"]

[push]
rate_limit = 1000
rate_window = 1
TOML
show zivsync run --config "$out/nightly.toml"
show zivsync run --config "$out/nightly.toml" -q --apply
last=$(ls -d "$out"/runs/*/ | tail -n 1)
last=${last%/}
echo "the run folder: $(ls "$last" | tr '\n' ' ')"

step "4a. A broken stream is refused with its line number"
if zivsync-validate examples/directory-ldap-broken.jsonl; then
    echo "unexpected: the broken stream validated" >&2; exit 1
fi

step "4b. A truncated directory stream: the safety net works. diff withholds every suspension it would have planned and refuses the plan (exit 3), saying why"
zivsync-normalize -q -i examples/directory-ldap-truncated.jsonl -i examples/directory-exchange.jsonl \
    -o "$out/desired-truncated.jsonl"
status=0
zivsync-diff -q -i "$out/desired-truncated.jsonl" --current "$last/current.jsonl" --state "$out/state" \
    -o "$out/plan-truncated.jsonl" || status=$?
suspensions=$(grep '"type":"change"' "$out/plan-truncated.jsonl" | grep -c '"op":"suspend_user"' || true)
echo "diff exit code $status (3 = refused by a safety check); suspensions planned: $suspensions"
[ "$status" -eq 3 ] && [ "$suspensions" -eq 0 ]

step "4c. Active Directory alone: it speaks for people, not for Full Access, so delegates stay as Zivver has them"
zivsync-normalize -q -i examples/directory-ldap.jsonl -o "$out/desired-ldap-only.jsonl"
zivsync-diff -q -i "$out/desired-ldap-only.jsonl" --current "$last/current.jsonl" --state "$out/state" \
    -o "$out/plan-ldap-only.jsonl" || true
delegate_changes=$(grep '"type":"change"' "$out/plan-ldap-only.jsonl" | grep -v '"op":"create_' \
    | grep -c '"delegates"' || true)
echo "an LDAP-only plan: $(grep -c '"type":"change"' "$out/plan-ldap-only.jsonl" || true) changes, of which change delegates: $delegate_changes"
grep -o '"unmanaged":{[^}]*}' "$out/plan-ldap-only.jsonl" | head -n 1
[ "$delegate_changes" -eq 0 ]

step "5. The report of the last run, for people: on the terminal, and as a page to attach to a change ticket"
show zivsync report "$last" --html "$out/report.html"
echo "the HTML report: $out/report.html"

step "Done: every stream of every run is in $out/"
