# One command sets up and runs the main job (`make demo`); one runs every test (`make test`).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: demo test check bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch goes in first, pinned to the local CPU wheel, so no dependency can pull a CUDA build.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[demo]'
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

demo: $(VENV)/.installed
	$(BIN)/fmforge demo

# pytest exits 5 when it collects no test; that is reported, not hidden as a pass of nothing.
test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; fi; exit $$rc

check: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples
	$(BIN)/mypy

bench: $(VENV)/.installed-dev
	$(BIN)/python benchmarks/ledger.py
	$(BIN)/python benchmarks/objects.py
	$(BIN)/python benchmarks/vcs.py
	$(BIN)/python benchmarks/tracking.py
	$(BIN)/python benchmarks/label_model.py
	$(BIN)/python benchmarks/data.py
	$(BIN)/python benchmarks/record.py
	$(BIN)/python benchmarks/scale.py
	$(BIN)/python benchmarks/access.py
	$(BIN)/python benchmarks/lf_synth.py
	$(BIN)/python benchmarks/finetune.py
	$(BIN)/python benchmarks/scale_data.py
	$(BIN)/python benchmarks/serving.py --cpu-time
	$(BIN)/python benchmarks/merge.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
