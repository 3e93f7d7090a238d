# `make demo` trains the main job; `make test` runs the suite. Each sets itself up on a fresh clone.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
FMNIST := /usr/share/datasets/fashion-mnist
EXTRAS ?= dev,onnx,tensorboard,cam

.PHONY: setup data browser demo test bench clean

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt torch torchvision
	$(PY) -m pip install -q -c constraints.txt -e '.[$(EXTRAS)]'
	touch $@

setup: $(VENV)/.installed

# Debian's package puts the four IDX files in $(FMNIST); installed only when missing and we are root.
data:
	@if [ -f $(FMNIST)/train-images-idx3-ubyte.gz ] || [ -f $(FMNIST)/train-images-idx3-ubyte ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get install -y -q dataset-fashion-mnist || (apt-get update -q && apt-get install -y -q dataset-fashion-mnist)) >/dev/null \
	  || echo "warning: could not install dataset-fashion-mnist; tests that need it will be skipped"; \
	else echo "note: Fashion-MNIST not found in $(FMNIST); see README (apt-get install dataset-fashion-mnist)"; fi

# Debian's chromium lets tests/analysis/test_report.py check the HTML report in a real browser;
# installed only when missing and we are root, never failing the build (the test then skips).
browser:
	@if command -v chromium >/dev/null || command -v chromium-browser >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get install -y -q chromium || (apt-get update -q && apt-get install -y -q chromium)) >/dev/null 2>&1 \
	  || echo "warning: could not install chromium; the browser test of the report will be skipped"; \
	else echo "note: no chromium; the browser test of the report is skipped (apt-get install chromium)"; fi

# bf16 autocast only where the CPU computes bfloat16 natively (AVX512-BF16 or AMX); elsewhere it is
# emulated and slower than float32. channels_last pays on every CPU (oneDNN's convolutions are NHWC).
DEMO_BF16 := $(shell grep -qsE 'avx512_bf16|amx_bf16' /proc/cpuinfo && echo --bf16)
# In float32, resnet8_fast spends about a quarter of a step on its stem's BN and ReLU over 28x28 maps;
# resnet8_prepool pools before them, and trained 3 epochs at a higher rate it reaches 93% in about
# 2 minutes on such a CPU (docs/RESULTS.md, recipes demo and demo_fp32).
DEMO_ARGS := $(if $(DEMO_BF16),--model resnet8_fast --epochs 4 --lr 0.4 --bf16,--model resnet8_prepool --epochs 3 --lr 0.8)

# A new demo replaces the last one's run files (runs.RUN_FILES and RUN_OUTPUTS) and nothing else:
# a runs/demo that holds no run is the user's, and is left alone.
DEMO_FILES := train_state.pt model.json model.safetensors best.safetensors metrics.jsonl metrics.csv curves.png confusion.png

demo: setup data
	@if [ -n "$$(ls -A runs/demo 2>/dev/null)" ] && [ ! -f runs/demo/model.json ] && [ ! -f runs/demo/train_state.pt ]; then \
	  echo "error: runs/demo holds no run of make demo; move it away (or rename it) and run make demo again" >&2; \
	  exit 2; fi
	cd runs/demo 2>/dev/null && rm -f $(DEMO_FILES) || true
	$(VENV)/bin/resnet-lab train $(DEMO_ARGS) --dataset fashion-mnist --batch-size 256 --no-augment \
	    --label-smoothing 0.1 --channels-last --whiten --out runs/demo

test: setup data browser
	$(PY) -m pytest -q -n 2 tests

bench: setup data
	$(PY) benchmarks/run_all.py --wait-for-load 0.6 --max-wait-min 5

clean:
	rm -rf $(VENV) build dist *.egg-info src/*.egg-info .pytest_cache
