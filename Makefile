# Two entry points on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.nbenv-installed

.PHONY: demo test lint chromium

# The package build also builds the JupyterLab extension (node + npm, about 90 s on a clean
# clone for `jlpm install`); it skips an existing build, so changed sources remove it first.
LAB_SOURCES := labextension/package.json labextension/yarn.lock labextension/tsconfig.json \
	$(wildcard labextension/src/*.ts labextension/style/*)

$(STAMP): pyproject.toml $(LAB_SOURCES)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	rm -rf nbenv/labextension
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# The browser tests (tests/browser/) drive Debian's chromium, installed here when missing;
# never a browser that Playwright downloads. NBENV_SKIP_BROWSER=1 skips them instead; without
# it a missing chromium fails the tests loudly.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo -n)
chromium:
	@if [ -n "$$NBENV_SKIP_BROWSER" ] || command -v chromium >/dev/null; then :; \
	elif command -v apt-get >/dev/null; then \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q chromium \
		|| { $(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive \
			$(SUDO) apt-get install -y -q chromium; }; \
	else \
		echo "chromium is missing and apt-get is not here: install Debian's chromium, or set" \
			"NBENV_SKIP_BROWSER=1 to skip the browser tests" >&2; exit 1; \
	fi

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
test: lint chromium
	$(PY) -m pytest
