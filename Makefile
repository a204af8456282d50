# Two commands for a new user: `make demo` (the main job) and `make test`.
PY ?= .venv/bin/python
VENV := .venv

.PHONY: demo test test-only lint fuzz bench clean vectors

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[test,langgraph,mcp]'
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/meshsyncd demo

test: $(VENV)/.installed
	$(MAKE) test-only PY=$(VENV)/bin/python

# The test command the README documents and .ci/run runs.
test-only:
	$(PY) -m pytest -q

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

fuzz: $(VENV)/.installed
	$(VENV)/bin/python -m pip install --quiet -e '.[fuzz]'
	for t in item batch frame connection memshadow; do PY=$(VENV)/bin/python fuzz/run.sh $$t $${FUZZ_SECONDS:-60}; done

bench: $(VENV)/.installed
	$(VENV)/bin/meshsyncd bench codec

vectors: $(VENV)/.installed
	$(VENV)/bin/python tests/protocol/make_vectors.py

clean:
	rm -rf $(VENV) .ci-venv build *.egg-info .pytest_cache .mypy_cache .ruff_cache
