# zivsync: `make demo` runs the pipeline on the bundled sample organisation, `make test`
# runs the test suite, `make bench` the benchmark. Each creates its own virtual
# environment (.venv) on first use; nothing is installed outside it.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv test-deps kerberos-extra test demo bench soak golden docs bundle clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@# the optional Kerberos support (gssapi) builds against the system's krb5 headers
	if command -v krb5-config >/dev/null; then $(BIN)/python -m pip install --quiet -e '.[test,kerberos]'; fi
	touch $(STAMP)

# System packages for the integration tests (Samba AD, ldap-utils): installed when missing
# and running as root, as CI does; see the script.
test-deps:
	bash scripts/install-test-deps.sh

# The Kerberos extra follows what this machine can build: krb5-config may have appeared (make
# test-deps installs it) after .venv was made without it.
kerberos-extra: venv
	@if command -v krb5-config >/dev/null && ! $(BIN)/python -c "import gssapi" 2>/dev/null; then \
		$(BIN)/python -m pip install --quiet -e '.[test,kerberos]'; fi

test: test-deps venv kerberos-extra
	$(BIN)/python -m pytest -q

# zivsync demo: Python, no shell (stages/operator/demo.py); Windows runs the same `zivsync demo`.
demo: venv
	$(BIN)/zivsync demo

bench: test-deps venv
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python scripts/bench.py

# The long soak: 300 people, 90 nights, two seeds, against zivsync-sandbox (tests/soak.py).
soak: venv
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python scripts/soak.py

# Rewrite the golden files under tests/golden/ after a deliberate change of output.
golden: venv
	$(BIN)/python -m pytest -q tests/test_golden.py --update-golden

# Rewrite docs/commands.md from every command's --help (tests/test_docs.py checks it is current).
docs: venv
	$(BIN)/python scripts/make_docs.py

# Offline install bundles, one zip per platform, in dist/ (docs/offline-install.md): the newest
# releases of every dependency from the index, downloads kept in ~/.cache/zivsync-bundle.
bundle: venv
	$(BIN)/python scripts/bundle.py --refresh

clean:
	rm -rf $(VENV) demo-output .pytest_cache
