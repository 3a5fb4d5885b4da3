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
# each other at every step.
test: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n auto tests

demo: $(STAMP)
	$(PY) demo.py

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

clean-demo:
	rm -rf demo demo_results.md
