#!/usr/bin/env bash
# Installs zivsync @VERSION@ from this bundle's wheelhouse, with no internet access: a virtual
# environment in <folder>/venv, pip installing from wheelhouse/ only (--no-index), and
# <folder>/bin holding a launcher for every executable (zivsync, zivsync-run, ...) to put on PATH.
#
#   bash install.sh /opt/zivsync
#   bash install.sh /opt/zivsync --python /usr/bin/python3.12
#   bash install.sh /opt/zivsync --force        # replace an earlier install there
#
# Every file is checked against SHA256SUMS before anything is installed. The Pythons this bundle
# has wheels for: @PYTHONS_AND@ (CPython, x86_64, glibc @GLIBC@ or later). docs/offline-install.md
# has the whole story.
set -euo pipefail

VERSION='@VERSION@'
PYTHONS='@PYTHONS_SH@'             # newest first
KERBEROS_PYTHONS='@KERBEROS_SH@'   # those for which the bundle has the Kerberos extra
COMMANDS='@COMMANDS_SH@'

usage() {
    echo "usage: bash install.sh FOLDER [--python PYTHON] [--force]"
    echo "Installs zivsync $VERSION into FOLDER/venv, with launchers in FOLDER/bin, from this bundle only."
    echo "  --python PYTHON  the Python to make the venv with (default: the newest of"
    echo "                   python${PYTHONS// /, python} on PATH, else python3)"
    echo "  --force          replace an earlier install in FOLDER (its venv and bin; nothing else there)"
}
die() { echo "install.sh: $*" >&2; exit 1; }

target='' python='' force=0
while [ $# -gt 0 ]; do
    case "$1" in
        --python) [ $# -ge 2 ] || die "--python needs a value"; python=$2; shift 2 ;;
        --python=*) python=${1#--python=}; shift ;;
        --force) force=1; shift ;;
        -h|--help) usage; exit 0 ;;
        -*) usage >&2; exit 2 ;;
        *) [ -z "$target" ] || { usage >&2; exit 2; }; target=$1; shift ;;
    esac
done
[ -n "$target" ] || { usage >&2; exit 2; }
bundle=$(cd "$(dirname "$0")" && pwd)

# -- 1. a Python this bundle has wheels for ----------------------------------------------------
if [ -z "$python" ]; then
    for candidate in $PYTHONS; do
        # (on PATH and running: a pyenv shim is on PATH for versions it does not serve)
        if "python$candidate" -c '' >/dev/null 2>&1; then python=python$candidate; break; fi
    done
    [ -n "$python" ] || python=python3
fi
command -v "$python" >/dev/null 2>&1 || die "found no Python ${PYTHONS// /, } (give one with --python)"
python=$(command -v "$python")
# "3.12 x86_64 64": its version, its machine, and 64-bit or not
said=$("$python" -c 'import platform, sys; print("%d.%d" % sys.version_info[:2], platform.machine(), sys.maxsize.bit_length() + 1)') \
    || die "$python does not run"
read -r python_version machine bits <<<"$said"
case " $PYTHONS " in
    *" $python_version "*) ;;
    *) die "$python is Python $python_version; this bundle has wheels for Python ${PYTHONS// /, } only: install one of those and name it with --python" ;;
esac
[ "$machine" = x86_64 ] && [ "$bits" = 64 ] || die "$python runs on $machine ($bits-bit): this bundle is for x86_64"
echo "Python $python_version: $python"

# -- 2. every file of the bundle is as it was built: SHA256SUMS ----------------------------------
echo "Checking the files against SHA256SUMS..."
[ -f "$bundle/SHA256SUMS" ] || die "no SHA256SUMS in $bundle"
if command -v sha256sum >/dev/null 2>&1; then
    (cd "$bundle" && sha256sum --check --quiet --strict SHA256SUMS) \
        || die "the bundle does not match SHA256SUMS: it is damaged or was changed; do not install it"
else  # no coreutils (a minimal image): the same check in Python
    "$python" - "$bundle" <<'PY' || die "the bundle does not match SHA256SUMS: it is damaged or was changed; do not install it"
import hashlib, pathlib, re, sys
root, bad = pathlib.Path(sys.argv[1]), []
for line in (root / "SHA256SUMS").read_text(encoding="utf-8").splitlines():
    match = re.fullmatch(r"([0-9a-fA-F]{64}) [ *](.+)", line)
    if not match:
        sys.exit(f"SHA256SUMS: a line I cannot read: {line}")
    path = root / match[2]
    if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != match[1].lower():
        bad.append(match[2])
if bad:
    sys.exit("FAILED: " + ", ".join(bad))
PY
fi
for wheel in "$bundle"/wheelhouse/*; do
    name=wheelhouse/${wheel##*/}
    awk -v name="$name" '{ sub(/^[0-9a-fA-F]+ [ *]/, "") } $0 == name { found = 1 } END { exit !found }' \
        "$bundle/SHA256SUMS" || die "$name is not in SHA256SUMS: it is not part of this bundle; remove it"
done
echo "  $(wc -l <"$bundle/SHA256SUMS" | tr -d ' ') files match."

# -- 3. the virtual environment: FOLDER/venv ---------------------------------------------------
mkdir -p "$target"
target=$(cd "$target" && pwd)
venv=$target/venv
if [ -e "$venv" ] || [ -e "$target/bin" ]; then
    if [ ! -x "$venv/bin/zivsync" ]; then
        die "$target holds a venv or bin that is not an earlier zivsync's: name a new or empty folder"
    fi
    [ "$force" = 1 ] || die "$target already holds zivsync: add --force to replace it (stop the nightly timer first)"
    rm -rf "$venv" "$target/bin"  # the earlier venv and launchers; whatever else is there stays
fi
echo "Creating the virtual environment in $venv..."
"$python" -m venv "$venv" \
    || die "$python -m venv failed; on Debian and Ubuntu the venv module is a package of its own: apt install python$python_version-venv"

# -- 4. zivsync and what it needs, from the wheelhouse only ------------------------------------
requirement="zivsync==$VERSION"
case " $KERBEROS_PYTHONS " in *" $python_version "*) requirement="zivsync[kerberos]==$VERSION" ;; esac
echo "Installing $requirement from $bundle/wheelhouse (no index)..."
# No pip configuration file (PIP_CONFIG_FILE=/dev/null) and no PIP_ variable (--isolated) of this
# machine may add an index or a constraint.
PIP_CONFIG_FILE=/dev/null "$venv/bin/python" -m pip --isolated install --no-index \
    --find-links "$bundle/wheelhouse" --only-binary :all: --disable-pip-version-check \
    --no-warn-script-location --quiet "$requirement" \
    || die "pip could not install $requirement from the wheelhouse"

# -- 5. FOLDER/bin: a launcher for every executable ---------------------------------------------
mkdir -p "$target/bin"
count=0
for command in $COMMANDS; do
    [ -x "$venv/bin/$command" ] || die "pip did not install $venv/bin/$command"
    quoted=$(printf '%s' "$venv/bin/$command" | sed "s/'/'\\\\''/g")
    printf '#!/bin/sh\nexec '\''%s'\'' "$@"\n' "$quoted" >"$target/bin/$command"
    chmod 755 "$target/bin/$command"
    count=$((count + 1))
done
reported=$("$target/bin/zivsync" --version) || die "zivsync --version failed"
[ "$reported" = "zivsync $VERSION" ] || die "zivsync --version said '$reported', not 'zivsync $VERSION'"

echo
echo "zivsync $VERSION is installed in $target ($count executables in $target/bin)."
echo "To run it from any shell, add $target/bin to PATH: for every user"
echo "  echo 'export PATH=\"$target/bin:\$PATH\"' | sudo tee /etc/profile.d/zivsync.sh"
echo "or for this shell only"
echo "  export PATH=\"$target/bin:\$PATH\""
