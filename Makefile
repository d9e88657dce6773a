# The README's commands. Each target does its own set-up: a virtual environment in .venv,
# created once and reused; it is reinstalled only when pyproject.toml changes.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup demo test test-fast test-gpu lint bench bench-keras bench-startup gallery tensorboard clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

## demo: set up, then train the linear-regression lesson and print the recovered slope and intercept
demo: $(STAMP)
	$(PY) -m experiments fit --config configs/linear_regression.yaml

## test: set up, then run the linter and the whole test suite. JOBS=2 runs it on two pytest processes
## (pytest-xdist, a test file whole on each: 16-18 min instead of 22 on 2 cores), which CI does not:
## under that load a sweep test's trial once never reported within its 400 s wait
JOBS ?= 1
test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest $(if $(filter-out 1,$(JOBS)),-n $(JOBS) --dist loadfile)

## test-fast: set up, then ruff, the unit tests, the README table's test and one lesson end to end: the
## checks to run while working, under 2 minutes on 2 CPU cores. Of tests/experiments only the files that
## run in seconds (most start whole runs or several processes); tests marked slow are left out.
## `make test` runs everything
FAST_TESTS := tests/core tests/modules tests/datamodules tests/test_readme_lessons.py \
	tests/experiments/test_tensorboard.py tests/experiments/test_lightning_internals.py \
	tests/lessons/test_linear_regression.py
test-fast: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest -q -m "not slow" $(FAST_TESTS)

## test-gpu: set up, then run only the tests that need a CUDA GPU (every lesson on cuda in fp32 and
## bf16-mixed, the GPU presets, DDP on one GPU); without a GPU each is reported skipped, with the reason
test-gpu: $(STAMP)
	$(PY) -m pytest -m gpu -rs

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

## bench: the benchmarks of benchmarks/RESULTS.md (the lesson overhead, the exported models' latency). DATA=<folder> holding MNIST/raw, sst/, text/ and coco/
## (the layout of the project's offline data copy) adds the data benchmarks
bench: $(STAMP)
	$(PY) benchmarks/lesson_overhead.py
	$(PY) benchmarks/export_latency.py
	@if [ -n "$(DATA)" ]; then \
		$(PY) benchmarks/data_path.py --data-dir "$(DATA)" && \
		$(PY) benchmarks/mnist_overhead.py --data-dir "$(DATA)" && \
		$(PY) benchmarks/tree_batching.py --data_dir "$(DATA)/sst" && \
		$(PY) benchmarks/word2vec_vs_gensim.py "$(DATA)/text/tinyshakespeare.txt" && \
		$(PY) benchmarks/word2vec_update.py "$(DATA)/text/tinyshakespeare.txt" && \
		$(PY) benchmarks/coco_overfit.py --data-dir "$(DATA)/coco"; \
	else echo "skipping the data benchmarks: set DATA=<folder holding MNIST/raw, sst/, text/, coco/>"; fi

## bench-keras: one MNIST epoch of the convnet chapter's Keras model (Keras 3, torch backend) against the
## mnist_convnet lesson. DATA=<folder holding MNIST/raw>. Keras is no project dependency: it is installed
## into $(VENV) here, only when missing
bench-keras: $(STAMP)
	@if [ -z "$(DATA)" ]; then echo "set DATA=<folder holding MNIST/raw>, e.g. make bench-keras DATA=../shared/data"; exit 2; fi
	KERAS_BACKEND=torch $(PY) -c "import keras" 2>/dev/null || $(PY) -m pip install "keras>=3"
	$(PY) benchmarks/keras_peer.py --data-dir "$(DATA)"

## bench-startup: start-up cost, command to first training step, of `python -m experiments fit` against a
## bare LightningCLI script on the same config (and import and --help times); REPEATS=<n> (default 5)
bench-startup: $(STAMP)
	$(PY) benchmarks/startup.py --repeats $(or $(REPEATS),5)

## gallery: the README's lesson pictures (docs/images/*.png, committed) from short real runs of each lesson.
## DATA=<folder> in the layout of the project's offline data copy (MNIST/raw, cifar10_jpg.tar.gz, faces/,
## sst/, text/, coco/); a lesson whose data is missing there is skipped. ONLY="<image> ..." makes only those
gallery: $(STAMP)
	@if [ -z "$(DATA)" ]; then echo "set DATA=<folder of the datasets>, e.g. make gallery DATA=../shared/data"; exit 2; fi
	$(PY) scripts/gallery.py --data "$(DATA)" $(if $(ONLY),--only $(ONLY))

## tensorboard: every experiment's runs; EXPERIMENT=<name> (e.g. boston_housing) opens one, whose HPARAMS
## tab then ticks by default what its runs vary
tensorboard: $(STAMP)
	$(VENV)/bin/tensorboard --logdir lightning_logs/$(EXPERIMENT)

clean:
	rm -rf lightning_logs
