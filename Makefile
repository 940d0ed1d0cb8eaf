# Two entry points for a fresh machine (see README):
#   make devnet   install into .venv and run a local DLBC chain (embedded dev node unless cometbft is on PATH)
#   make test     install into .venv and run the test suite
# PyTorch's CPU build is installed first on purpose: a bare `pip install torch` pulls a multi-GB CUDA build.

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: install devnet localnet test bench clean proto

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e '.[dev,demo]'
	touch $@

devnet: install
	$(BIN)/dlbc devnet

localnet: install
	$(BIN)/dlbc localnet --validators 4

test: install
	$(BIN)/python -m pytest -q

proto: install
	$(BIN)/python -m abci_app.proto.gen

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build *.egg-info
