# The two commands that matter: `make study` and `make test`. Both create .venv if missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
WORKDIR ?= runs/quick
STAMP := $(VENV)/.installed
# XLA on CPU allocates each step's temporaries afresh; where transparent huge pages are
# "madvise" only, this lets glibc ask for them, which cut the training step at L 256 from
# 0.69 s to 0.50 s (experiments/benchmarks/NOTES.md, "Memory pages"). Ignored elsewhere.
export GLIBC_TUNABLES ?= glibc.malloc.hugetlb=1

.PHONY: install study test test-all lint figures clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

study: $(STAMP)
	$(PY) -m experiments.length_extrapolation --config=experiments/configs/quick.py --workdir=$(WORKDIR)

# The suite without the tests marked slow (notebooks, trained figures, killed processes);
# test-all runs every test.
test: $(STAMP)
	$(PY) -m pytest -q -n 2 --durations=15 -m "not slow"

test-all: $(STAMP)
	$(PY) -m pytest -q -n 2 --durations=15

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

figures: $(STAMP)
	$(PY) -m experiments.figures --out figures/

clean:
	rm -rf $(VENV) runs
