# Two entry points for a fresh machine (see README):
#   make demo     install, then run a local DLBC chain with a publisher, two miners and four
#                 validators on real CometBFT (the pinned v0.38 build in .tools/), or the embedded
#                 single-validator dev node (`dlbc devnet`) when no binary could be built
#   make test     install, lint (ruff, mypy --strict, import contracts), then run the test suite
#                 (real-CometBFT tests included)
# Install = .venv (PyTorch first, TORCH_SPEC picks the build, then this project) + the pinned
# CometBFT releases of cometbft/versions.txt built by `go install` into .tools/ (make tools).
# Both steps are idempotent: a second run fetches nothing.

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: install tools compat demo devnet localnet test lint bench clean proto

install: $(VENV)/.installed tools compat

# cometbft/install.sh skips binaries already built and says in one line when Go is missing.
tools:
	@bash cometbft/install.sh

# The newest supported Python runs the consensus core (protobuf, LMDB, ed25519: no torch) beside
# the main venv's oldest one: `make test` runs the state-machine tests (tests/abci_app/dlbc) on it, and
# tests/abci_app/dlbc/test_scenario.py runs validators on both and checks they agree bit for bit. Same
# library versions as .venv; skipped (and said) where no python3.13 can be found.
COMPAT_PYTHON ?= $(firstword $(foreach p,python3.13 $(wildcard $(HOME)/.pyenv/versions/3.13*/bin/python3.13) /usr/bin/python3.13,$(shell $(p) -c 'import sys; print(sys.executable)' 2>/dev/null)))
COMPAT_VENV := .venv-py313
compat: $(VENV)/.installed
	@if [ -z "$(COMPAT_PYTHON)" ]; then \
		echo "compat: no python3.13 here; the cross-Python determinism test will skip"; \
	elif [ ! -f $(COMPAT_VENV)/.installed ] || [ $(VENV)/.installed -nt $(COMPAT_VENV)/.installed ]; then \
		$(COMPAT_PYTHON) -m venv $(COMPAT_VENV) && \
		$(BIN)/python -m pip freeze | grep -iE '^(protobuf|lmdb|cryptography|pynacl|cffi|pycparser|pytest|pytest-timeout|hypothesis|iniconfig|pluggy|packaging|sortedcontainers|pygments)==' > $(COMPAT_VENV)/constraints.txt && \
		$(COMPAT_VENV)/bin/python -m pip install --quiet -r $(COMPAT_VENV)/constraints.txt && \
		touch $(COMPAT_VENV)/.installed; \
	fi

# PyTorch's CUDA build unpacks to about 5 GB in .venv and passes through pip's temp folder on
# the way, so a fresh install needs room for both. Checked first (when there is no venv yet) so a full disk reads as one clear
# line here and not as pip's "[Errno 28] No space left on device" halfway through torch.
INSTALL_FREE_GB ?= 8
$(VENV)/.installed: pyproject.toml
	@[ -x $(BIN)/python ] || for d in "$(CURDIR)" "$${TMPDIR:-/tmp}"; do \
		free=$$(df -Pk "$$d" 2>/dev/null | awk 'NR==2 {print int($$4 / 1048576)}'); \
		if [ -n "$$free" ] && [ "$$free" -lt $(INSTALL_FREE_GB) ]; then \
			echo "install: only $$free GB free on the disk of $$d; installing PyTorch ($(TORCH_SPEC)) needs about $(INSTALL_FREE_GB) GB. Free some space (or pick a smaller build with TORCH_SPEC=..., or lower INSTALL_FREE_GB) and run make again." >&2; \
			exit 1; \
		fi; \
	done
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e '.[dev,demo]'
	touch $@

demo: install
	$(BIN)/dlbc localnet --validators 4 --demo

devnet: install
	$(BIN)/dlbc devnet

localnet: install
	$(BIN)/dlbc localnet --validators 4

# Lint first (seconds): CI (`.ci/run` = `make test`) thereby enforces ruff, strict mypy and the
# layer contracts of pyproject.toml [tool.importlinter] before a single test runs.
test: lint
	@if [ -x $(COMPAT_VENV)/bin/python ]; then \
		echo "== the state machine's tests on the newest supported Python ($$($(COMPAT_VENV)/bin/python -V))"; \
		PYTHONPATH=$(CURDIR) $(COMPAT_VENV)/bin/python -m pytest -q -p no:cacheprovider tests/abci_app/dlbc; \
	fi
	$(BIN)/python -m pytest -q

# ruff, mypy --strict (pyproject.toml [tool.mypy]) and the import contracts (lint-imports).
lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy abci_app watermark training dlbc_ops
	$(BIN)/lint-imports --no-cache --no-logo

bench: install
	$(BIN)/python bench/abci_throughput.py
	$(BIN)/python bench/cometbft_throughput.py --rounds 2
	$(BIN)/python bench/state_machine.py
	$(BIN)/python bench/training.py
	$(BIN)/python bench/watermark.py
	$(BIN)/python bench/verifier.py

proto: install
	$(BIN)/python -m abci_app.proto.gen

clean:
	rm -rf $(VENV) $(COMPAT_VENV) .tools .pytest_cache .hypothesis build *.egg-info
