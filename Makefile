# Two commands matter: `make run` and `make test`. Both build .venv themselves.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test install system-deps lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,dev]'
	touch $(STAMP)

install: $(STAMP)

# dig and dnsmasq are used by the end-to-end tests and `make run`'s hints.
system-deps:
	@command -v dig >/dev/null && command -v dnsmasq >/dev/null || \
	  { apt-get update -qq && apt-get install -y -qq dnsutils dnsmasq >/dev/null; }

run: $(STAMP)
	$(BIN)/python -m controlplane.demo --manifests examples

test: $(STAMP) system-deps lint
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check controlplane tests e2e
	$(BIN)/mypy controlplane

clean:
	rm -rf $(VENV) .pytest_cache
