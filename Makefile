# Two commands do everything on a fresh machine: `make demo` and `make test`.
# Both create .venv, install the package, make sure the sandbox's system
# packages are present and build the session image (the sandbox's own Python
# environment) before doing their job.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
OUT    ?= out

.PHONY: all setup system image lock bytecode ui-deps demo test bench clean

all: test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# editable_mode=compat: a plain path entry in a .pth file. The default (an
# import hook) costs every start of this venv's Python ~20 ms, kernels
# included. setuptools calls compat transitional: fall back when it is gone.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]' --config-settings editable_mode=compat 2>/dev/null \
	  || $(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $@

# System packages the sandbox needs (bubblewrap). Installed when missing and
# we may (root with apt-get); otherwise the script says what to install.
system:
	@sh .ci/system-packages.sh

# The session image: a Python environment the sandbox uid can read, built
# by uv from the lock file (pinned, with hashes). Rebuilt only when the lock
# changes; a rebuild with nothing changed is a no-op.
image: $(STAMP) system
	$(BIN)/azure-sessions-kernel image build

# Re-resolve pool/image/requirements.in into requirements.lock (commit both).
lock: $(STAMP)
	$(BIN)/azure-sessions-kernel image lock

# Byte-compile the package as pip does for a normal install: with an editable
# install under PYTHONDONTWRITEBYTECODE (set on some machines, CI among them)
# every kernel and pool would otherwise compile it afresh at each start.
# Stale files are harmless: Python checks each against its source.
bytecode: $(STAMP)
	@$(BIN)/python -m compileall -q azure_sessions_kernel

# What the browser tests in tests/ui need beyond the test extra: playwright-core
# from the npm registry (npm ci: exactly the lockfile; it drives Debian's
# chromium, which `system` installs, and never downloads a browser), and the
# reference kernel, a plain ipykernel with ipywidgets and tqdm in a venv of its
# own, so the project's venv (our kernel's environment) holds no widget package.
UI      := tests/ui
UI_REF  := .venv-ui-ref
# Without npm the rest of the suite still runs; the UI tests then fail and say why.
$(UI)/node_modules/.installed: $(UI)/package.json $(UI)/package-lock.json
	@if command -v npm >/dev/null; then \
	    echo "cd $(UI) && npm ci"; cd $(UI) && npm ci --no-audit --no-fund --loglevel=error && touch node_modules/.installed; \
	else echo "note: npm is missing: the UI tests (tests/ui) fail until Node.js 20+ and npm are installed" >&2; fi

$(UI_REF)/.installed: $(UI)/reference-kernel.txt
	$(PYTHON) -m venv $(UI_REF)
	$(UI_REF)/bin/python -m pip install --quiet -r $(UI)/reference-kernel.txt
	@touch $@

ui-deps: system $(UI)/node_modules/.installed $(UI_REF)/.installed

setup: $(STAMP) system image bytecode

demo: setup
	$(BIN)/python -m azure_sessions_kernel.kernel.install --sys-prefix >/dev/null
	$(BIN)/python notebooks/run_demo.py --out $(OUT)

test: setup ui-deps
	$(BIN)/python -m pytest

bench: setup
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache $(UI_REF) $(UI)/node_modules
