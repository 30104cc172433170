# Every target sets itself up: a fresh clone needs only python3 (>= 3.10) and make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test lint bench clean

# setup.py compiles client/asyncplug.c into bin/asyncplug (the Python client without a compiler)
$(STAMP): pyproject.toml setup.py client/asyncplug.c
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# compat: a path in a .pth file; the default editable finder costs every process about 10 ms
	$(BIN)/pip install --quiet -e '.[test,bench]' --config-settings editable_mode=compat
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check asyncplug bench tests
	$(BIN)/ruff format --check asyncplug bench tests
	$(BIN)/mypy
	$(CC) -std=c99 -O2 -Wall -Wextra -Werror -pedantic -c -o /dev/null \
		-DASYNCPLUG_VERSION='"0"' -DASYNCPLUG_PYTHON='"python3"' client/asyncplug.c

# Byte-compiled first: the editable install compiles nothing, and with
# PYTHONDONTWRITEBYTECODE set every plugin process would compile its modules (~20 ms).
bench: $(STAMP)
	$(BIN)/python -m compileall -q asyncplug bench
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache bench-results
