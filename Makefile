# The two set-up commands of the README: `make serve` and `make test`.
# Both create .venv and install gslb into it (editable) on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: serve test lint system-deps clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

serve: $(STAMP)
	$(BIN)/gslb serve

system-deps:
	tools/install_system_deps.sh

# the linter and the type checker (settings: [tool.ruff] and [tool.mypy] in pyproject.toml)
lint: $(STAMP)
	$(BIN)/ruff check
	$(BIN)/mypy

test: $(STAMP) system-deps lint
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) build *.egg-info
