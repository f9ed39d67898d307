# hydromae: `make demo` and `make test` set everything up on first use.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
# torch first, pinned, so that the project's `torch>=2.3` adds nothing on top of it.
# On these machines the pin is a CPU wheel on local disk. Elsewhere, for a CPU build, run
#   make TORCH_INDEX=--index-url=https://download.pytorch.org/whl/cpu test
TORCH_SPEC  ?= torch==2.13.0
TORCH_INDEX ?=
DEMO_OUT ?= demo_out

.PHONY: install test lint demo bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH_INDEX) "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

test: lint
	$(PY) -m pytest

demo: $(STAMP)
	$(VENV)/bin/hydromae demo --out $(DEMO_OUT)

bench: $(STAMP)
	$(PY) bench/collate.py
	$(PY) bench/preprocess_memory.py
	$(PY) bench/loader.py
	$(PY) bench/train.py
	$(PY) bench/scale.py
	$(PY) bench/evaluate.py
	$(PY) bench/gpu.py

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache .ruff_cache
