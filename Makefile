# Two commands: `make demo` and `make test`. Both set themselves up (venv, pip, npm ci) and are
# fast when nothing changed. `make serve` runs the local playground (README "Run locally") the
# same way; SERVE_ARGS adds options, e.g. `make serve SERVE_ARGS=--run-timers-now`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
PY_STAMP := $(VENV)/.pcsync-installed
NODE_STAMP := node_modules/.pcsync-installed

.PHONY: setup browser test demo bench clean

setup: $(PY_STAMP) $(NODE_STAMP)

# tests/browser drive the Debian chromium through Playwright (whose own browser download cannot
# reach its CDN): installed here when missing and we are root; otherwise the browser tests skip,
# or fail under CI=true
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; \
	  else echo "chromium is not installed and this is not root: sudo apt-get install chromium" >&2; fi; }

$(PY_STAMP): pyproject.toml requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev,cli]'
	touch $@

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

test: setup browser
	$(PY) -m pytest -q

demo: setup
	$(PY) demo.py

serve: setup
	$(VENV)/bin/pcsync serve --simulator $(SERVE_ARGS)

clean:
	rm -rf $(VENV) node_modules .demo .pytest_cache
