# Two entry points for a fresh machine (see README):
#   make demo     install into .venv and run a local DLBC chain with a publisher, two miners and
#                 validators: real CometBFT (4 validators) when `cometbft` is on PATH, else the
#                 embedded single-validator dev node (`dlbc devnet`)
#   make test     install into .venv and run the test suite
# PyTorch's CPU build is installed first on purpose: a bare `pip install torch` pulls a multi-GB CUDA build.

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: install demo devnet localnet test lint bench clean proto

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
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

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy abci_app watermark training

bench: install
	$(BIN)/python bench/abci_throughput.py
	$(BIN)/python bench/state_machine.py
	$(BIN)/python bench/training.py
	$(BIN)/python bench/watermark.py

proto: install
	$(BIN)/python -m abci_app.proto.gen

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build *.egg-info
