# Both targets do all set-up on a fresh clone: venv, pinned install, then the job.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test test-slow bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first and pinned: an unpinned resolve would pull the CUDA build
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[test,ray]'
	# torchvision's model definitions only (its compiled part cannot load here); --no-deps keeps torch pinned
	$(PY) -m pip install --quiet --no-deps torchvision==0.28.0
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/onnxpruner demo

test: $(STAMP)
	$(PY) -m pytest

test-slow: $(STAMP)
	$(PY) -m pytest -m slow

bench: $(STAMP)
	$(PY) benchmarks/bench_pipeline.py

clean:
	rm -rf $(VENV) build *.egg-info
