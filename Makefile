# Two entry points on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.nbenv-installed

.PHONY: demo test lint

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# The quickstart notebook, executed headless against the configured PyPI, then a lock for
# two other machines. Outputs are printed; the executed notebook is saved beside it.
demo: $(STAMP)
	$(PY) -m nbenv run --show notebooks/quickstart.ipynb -o notebooks/quickstart.out.ipynb
	$(PY) -m nbenv lock --python 3.9 --platform manylinux_2_28_x86_64 \
		--python 3.12 --platform macosx_11_0_arm64 "numpy<3"

lint: $(STAMP)
	$(VENV)/bin/ruff check nbenv tests benchmarks
	$(VENV)/bin/ruff format --check nbenv tests benchmarks
	$(VENV)/bin/mypy

# pytest exits 5 when it collects no test; make treats that as the failure it is.
test: lint
	$(PY) -m pytest
