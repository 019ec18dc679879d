# fastgw developer commands. `make run` and `make test` install what is missing first, so a
# fresh clone needs nothing else (Python 3.11+, Node 20 and npm on the PATH; redis-server for
# the tests is installed with apt-get when missing and the user may).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
IDP_DEPS := tests/idp/node_modules/.package-lock.json
PYTEST_ARGS ?=

.PHONY: install redis-server promtool run test test-unit test-integration bench bench-locust bench-curves lint format clean wheel

# The hot modules (fastgw/build_info.py) are compiled with mypyc where a C compiler exists, in
# place and inside the venv (mypyc type-checks against the installed dependencies, which pip's
# isolated build environment lacks: the editable install itself is pure, and in compat mode so
# that the repository, where the shared library lands, is on sys.path), and rebuilt here
# whenever a source changed. FASTGW_PURE=1 make install leaves them pure Python.
FASTGW_SOURCES := $(shell find fastgw -name '*.py')
COMPILED := $(VENV)/.compiled

install: $(VENV)/.installed $(COMPILED) $(IDP_DEPS)

$(VENV)/.installed: pyproject.toml setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip 'setuptools>=77'
	# The editable install only links the sources (FASTGW_PURE=1): pip builds in an isolated
	# environment without the dependencies, where mypyc cannot type-check the hot modules.
	# $(COMPILED) compiles them in place, in the venv that has them; compat mode puts the
	# checkout on sys.path, where build_ext leaves the shared fastgw_compiled__mypyc module.
	FASTGW_PURE=1 $(PY) -m pip install --quiet -e '.[dev]' --config-settings editable_mode=compat
	touch $@

$(COMPILED): $(VENV)/.installed $(FASTGW_SOURCES)
	$(PY) setup.py --quiet build_ext --inplace
	touch $@

$(IDP_DEPS): tests/idp/package.json tests/idp/package-lock.json
	npm ci --prefix tests/idp --no-audit --no-fund --loglevel=error

# The Redis tests start their own redis-server processes (and a Redis Cluster) on free ports;
# nothing here starts or configures a system service.
redis-server:
	@if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server; \
		else \
			echo "the tests need redis-server and redis-cli: sudo apt-get install -y redis-server" >&2; \
			exit 1; \
		fi; \
	fi

# The metrics tests check a real scrape with promtool (Debian's prometheus package).
promtool:
	@if ! command -v promtool >/dev/null 2>&1; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus; \
		else \
			echo "the tests need promtool: sudo apt-get install -y prometheus" >&2; \
			exit 1; \
		fi; \
	fi

run: install
	$(PY) -m tests.support.demo

# The whole suite runs against both builds: compiled (where a compiler exists) and pure Python.
test: install redis-server promtool
	$(BIN)/mypy fastgw
	$(BIN)/fastgw --version
	$(PY) -m pytest -q $(PYTEST_ARGS)
	FASTGW_PURE=1 $(BIN)/fastgw --version
	FASTGW_PURE=1 $(PY) -m pytest -q $(PYTEST_ARGS)

test-unit: install
	$(PY) -m pytest -q tests/unit $(PYTEST_ARGS)

test-integration: install redis-server promtool
	$(PY) -m pytest -q tests/integration $(PYTEST_ARGS)

bench: install
	$(PY) bench/compare.py --oidc

bench-locust: install
	$(PY) bench/run.py

bench-curves: install
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) bench/curves.py

# A binary wheel with the hot modules compiled (pip's isolated build installs mypy and the
# runtime dependencies it type-checks against); installing it needs no compiler.
wheel:
	$(PYTHON) -m pip wheel --no-deps -w dist .

lint: install
	$(BIN)/ruff check fastgw tests bench
	$(BIN)/ruff format --check fastgw tests bench

format: install
	$(BIN)/ruff format fastgw tests bench
	$(BIN)/ruff check --fix fastgw tests bench

clean:
	rm -rf $(VENV) tests/idp/node_modules .pytest_cache bench/results build dist
	find . -name '*.so' -not -path './.venv/*' -not -path './tests/idp/*' -delete
