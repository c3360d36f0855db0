# hlviz: `make book` (the tutorials, rendered), `make test` (everything CI checks) and `make test-fast`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))
# notebooks run with a fixed thread count and no progress bars, as in CI
export HLVIZ_PROGRESS = 0
export HF_HUB_OFFLINE = 1
export HF_HUB_DISABLE_PROGRESS_BARS = 1
export TOKENIZERS_PARALLELISM = false
export PYDEVD_DISABLE_FILE_VALIDATION = 1
# idle OpenMP threads sleep instead of spinning (a spinning pool stalls on a busy machine)
export OMP_WAIT_POLICY = PASSIVE

.PHONY: help venv book test test-fast lint lab refresh bench gpu-check clean

help:
	@echo "make book      execute every notebook and render build/book/index.html (main job)"
	@echo "make test      lint + unit tests + strict nbval on every notebook, one pytest call"
	@echo "make test-fast the unit tests without the slow ones (notebooks, subprocess runs): ~1 min"
	@echo "make lab       JupyterLab on the notebooks"
	@echo "make refresh   re-execute notebooks in place to update stored outputs (NB=path for one)"
	@echo "make bench     benchmarks (markdown tables of ratios)"
	@echo "make gpu-check CUDA tests and one notebook per track on a GPU"

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

book: $(STAMP)
	$(PY) scripts/build_book.py --out build/book $(NOTEBOOKS)

test: $(STAMP)
	$(PY) -m pytest

# what a newcomer runs first: everything not marked slow (see conftest.py for what is)
test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check hlviz tests scripts bench conftest.py

lab: $(STAMP)
	$(VENV)/bin/jupyter lab $(if $(filter 0,$(shell id -u)),--allow-root) notebooks

refresh: $(STAMP)
	$(PY) scripts/build_book.py --inplace $(if $(NB),$(NB),$(NOTEBOOKS))

bench: $(STAMP)
	$(PY) bench/run.py
	$(PY) bench/probe_sweep.py
	$(PY) bench/attribution_bench.py
	$(PY) bench/toy_bench.py
	$(PY) bench/collect_bench.py
	$(PY) bench/units_bench.py
	$(PY) bench/patching_bench.py
	$(PY) bench/widgets_bench.py

gpu-check: $(STAMP)
	$(PY) -m pytest -m gpu tests
	HLVIZ_DEVICE=cuda $(PY) scripts/build_book.py --out build/gpu-book $(NOTEBOOKS)

clean:
	rm -rf build .pytest_cache .ruff_cache .hypothesis
