PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test demo bench clean-demo

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	touch $(STAMP)

# One pytest worker per core and one torch thread per process: two-thread operators on a shared core wait for
# each other at every step. loadgroup keeps the tests of one module-scoped fixture on one worker (tests/conftest.py);
# pytest-xdist 3.8 groups them under pytest 8, not 9.
test: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n auto --dist loadgroup tests

demo: $(STAMP)
	$(PY) demo.py

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

clean-demo:
	rm -rf demo demo_results.md
