# Two commands: `make demo` and `make test`. Both set themselves up (venv, pip, npm ci) and are
# fast when nothing changed.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
PY_STAMP := $(VENV)/.pcsync-installed
NODE_STAMP := node_modules/.pcsync-installed

.PHONY: setup test demo bench clean

setup: $(PY_STAMP) $(NODE_STAMP)

$(PY_STAMP): pyproject.toml requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev,cli]'
	touch $@

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

test: setup
	$(PY) -m pytest -q

demo: setup
	$(PY) demo.py

clean:
	rm -rf $(VENV) node_modules .demo .pytest_cache
