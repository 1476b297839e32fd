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

demo: $(STAMP)
	$(PY) -m nbenv lock "requests>=2.31" "pandas>=2.2" scikit-learn
	$(PY) -m nbenv lock --json --python 3.9 --platform manylinux_2_28_x86_64 \
		--python 3.12 --platform macosx_11_0_arm64 numpy

lint: $(STAMP)
	$(VENV)/bin/ruff check nbenv tests benchmarks
	$(VENV)/bin/ruff format --check nbenv tests benchmarks
	$(VENV)/bin/mypy

# pytest exits 5 when it collects no test; make treats that as the failure it is.
test: lint
	$(PY) -m pytest
