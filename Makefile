# Hearth. `make run` and `make test` work on a fresh Debian machine with Python 3.11:
# each sets up what it needs (a virtualenv in .venv, the pinned packages, Chromium for the
# browser tests) and does it only once; editing pyproject.toml installs again.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check --quiet
export PIP_NO_INPUT := 1

# The embedded model is needed only when no outside backend is configured.
RUN_STAMPS := $(VENV)/.installed-test $(if $(LLM_BASE_URL),,$(VENV)/.installed-llm)

.PHONY: run test login bench cassettes chromium

run: $(RUN_STAMPS)
	$(BIN)/python -m config.launch

test: $(VENV)/.installed-test chromium
	DATA_DIR=$(CURDIR)/data/test $(BIN)/python -m pytest $(PYTEST_ARGS)

login: $(VENV)/.installed-test
	@$(BIN)/python manage.py migrate --noinput --verbosity 0
	@$(BIN)/python manage.py login_url

# Benchmarks against the real stack, the shipped model included; writes docs/BENCHMARKS.md.
bench: $(VENV)/.installed-test $(VENV)/.installed-llm
	$(BIN)/python -m bench

# Re-records tests/cassettes/ against the real local model (see scripts/record_cassettes.py).
cassettes: $(VENV)/.installed-test $(VENV)/.installed-llm
	$(BIN)/python scripts/record_cassettes.py

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "Hearth needs Python 3.11 or newer; set PYTHON=/path/to/python3.11"; exit 1; }
	@# Debian's python3 has no venv module until python3-venv is installed.
	@$(PYTHON) -c 'import ensurepip' 2>/dev/null || $(call apt_install,python3-venv)
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed-test: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) install -c constraints.txt -e '.[test]'
	@touch $@

$(VENV)/.installed-llm: pyproject.toml constraints.txt | $(VENV)/.installed-test
	$(PIP) install -c constraints.txt -e '.[test,llm]'
	@touch $@

# The browser tests drive Debian's Chromium (Playwright cannot download its own browser here).
chromium:
	@test -x /usr/bin/chromium || $(call apt_install,chromium)

# $(call apt_install,PACKAGE): apt-get as root, else sudo without a password, else say what to do.
define apt_install
{ if [ "$$(id -u)" = 0 ]; then SUDO=; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; \
  else echo "Please install the Debian package $(1) (sudo apt-get install $(1)), then run make again."; exit 1; fi; \
  echo "Installing $(1) with apt-get..."; \
  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $(1) >/dev/null; }
endef

# After changing a pin in pyproject.toml: re-resolve and record every package's version.
constraints: $(BIN)/python
	$(PIP) install -e '.[test,llm]'
	{ echo "# Every package the project installs, pinned, transitive ones included (pip install -c)."; \
	  echo "# Regenerate after changing pyproject.toml: make constraints"; \
	  $(BIN)/python -m pip freeze --exclude-editable | \
	    sed -E 's#^([A-Za-z0-9._-]+) @ file://.*/[^/]+-([0-9][^-]*)-[^/]*\.whl.*#\1==\2#'; } > constraints.txt
	@# A wheel installed from a local file is frozen as "name @ file:///path", which no other
	@# machine has; the sed above records it as name==version instead. Refuse any that remain.
	@! grep -n ' @ ' constraints.txt || { echo "constraints.txt names a local path; fix it by hand"; exit 1; }
