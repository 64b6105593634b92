# Two commands a newcomer needs (see README.md):
#   make demo   installs everything into .venv and runs the demo
#   make test   installs everything tests need into .venv and runs the whole suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: install demo test lint campaign clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

# The MCP client matrix's Node clients (tests/mcp_clients, pinned by its lock file).
# Without npm the matrix's tests skip locally (and fail under CI, which installs npm).
CLIENTS := tests/mcp_clients
$(CLIENTS)/node_modules/.installed: $(CLIENTS)/package-lock.json
	@if command -v npm >/dev/null; then \
	  (cd $(CLIENTS) && npm ci --no-audit --no-fund --loglevel=error) && touch $@; \
	else echo "npm not found: the MCP client matrix tests will skip (install Node 22 and npm)"; fi

install: $(VENV)/.installed $(CLIENTS)/node_modules/.installed

demo: install
	$(BIN)/raft-manager demo

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: install lint
	$(BIN)/python -m pytest -q

campaign: install
	$(BIN)/python -m raft_core.sim campaign --seeds 10000 --json

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
