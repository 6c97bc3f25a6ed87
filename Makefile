# gradlab's front door. `make figures` and `make test` do all set-up themselves.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
CORE   := $(VENV)/.installed-core
STAMP  := $(VENV)/.installed
SCALE  ?= default
# torch's CPU build lies on disk on the project machines; a torch you already
# have in $(VENV) is kept (pyproject asks only for torch>=2.2).
TORCH  ?= torch==2.13.0

export MPLBACKEND := Agg
# idle OpenMP threads sleep instead of spinning: on a busy 2-core machine spinning threads made
# small torch operations up to 1000x slower
export OMP_WAIT_POLICY ?= PASSIVE
# pip installs without byte-compiling every file of every package (torch has thousands): Python
# compiles the modules a run imports, once, on first import, and keeps them; so .pyc files must
# be writable here even where the shell sets PYTHONDONTWRITEBYTECODE
unexport PYTHONDONTWRITEBYTECODE
PIP    := $(PY) -m pip install -q --no-compile

.PHONY: setup test figures bench lint docs clean-results

setup: $(STAMP)

# gradlab, its own dependencies and the real-data extra: all that make figures and make bench need
$(CORE): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PIP) "$(TORCH)"
	$(PIP) -e ".[data]"
	touch $(CORE)

# plus the test, lint and integration extras (pytest, ruff, Ray, TensorBoard, Lightning)
$(STAMP): $(CORE)
	$(PIP) -e ".[dev]"
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider tests

figures: $(CORE)
	$(PY) -m gradlab figures --scale $(SCALE) --jobs 2 --out $(if $(filter default,$(SCALE)),figures,results/figures-$(SCALE))

bench: $(CORE)
	$(PY) benchmarks/bench.py

# the documentation site: execute the tutorial once (jupytext + nbclient into build/docs/), then
# build the site from it without executing it again; warnings are errors. Output: site/index.html
docs: $(STAMP)
	$(PY) docs/execute_tutorial.py build/docs/tutorial.ipynb
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict

lint: $(STAMP)
	$(PY) -m ruff check gradlab tests benchmarks docs
