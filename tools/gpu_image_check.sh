#!/usr/bin/env bash
# One command for a GPU owner (`make gpu-image-check`, on a Docker host with an NVIDIA GPU): build the serving
# image, check it against its release's facts, export the ONNX, build every TensorRT plan in the image with
# its trtexec, serve the gpu variant, run the tests marked `gpu` against that server and perf_analyzer on
# every tier (`make bench`'s report format, in bench/gpu/). It stops at the first step that fails and names it.
#
# Environment: IMAGE and TRITON_IMAGE_TAG (the Makefile passes its own), DETECTOR and GENDER_MODEL (as
# `make export`; default: the offline models), HTTP_PORT, GRPC_PORT, METRICS_PORT (8000, 8001, 8002),
# READY_TIMEOUT_S (600: engine loads and the DALI graphs). The tests marked `gpu` find the server in
# PEOPLE_SERVER_URL (gRPC, host:port), PEOPLE_SERVER_HTTP_URL and PEOPLE_SERVER_METRICS_URL; with
# PEOPLE_GPU_CHECK=1 a GPU test that skips fails the check (tests/conftest.py).
set -Eeuo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
PY=.venv/bin/python
: "${IMAGE:?run it as make gpu-image-check (IMAGE comes from the Makefile)}"
: "${TRITON_IMAGE_TAG:?run it as make gpu-image-check (TRITON_IMAGE_TAG comes from the Makefile)}"
HTTP_PORT=${HTTP_PORT:-8000}
GRPC_PORT=${GRPC_PORT:-8001}
METRICS_PORT=${METRICS_PORT:-8002}
READY_TIMEOUT_S=${READY_TIMEOUT_S:-600}
REPORT_DIR=bench/gpu
SERVER_LOG=$REPORT_DIR/server.log
STEP="start"
SERVER_PID=""

step() {
    STEP=$1
    echo
    echo "== gpu-image-check: $STEP =="
}

fail() {
    echo "gpu-image-check: FAILED at step '$STEP': $*" >&2
    exit 1
}

on_error() {
    local status=$?
    echo "gpu-image-check: FAILED at step '$STEP' (exit status $status)" >&2
    exit "$status"
}

stop_server() {
    if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        echo "gpu-image-check: stopping the server (process group $SERVER_PID)"
        kill -TERM -- "-$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 60); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 1
        done
    fi
    SERVER_PID=""
}

trap on_error ERR
trap stop_server EXIT

step "preflight: docker and an NVIDIA GPU"
command -v docker >/dev/null || fail "no docker command"
docker info >/dev/null || fail "no Docker engine is reachable"
nvidia-smi -L || fail "nvidia-smi lists no GPU"

step "host environment (make setup, perf_analyzer)"
make setup perf-analyzer

step "export the ONNX and manifests (no plans on the host)"
"$PY" -m export --detector "${DETECTOR:-default}" --gender-model "${GENDER_MODEL:-default}" --plans no

step "build the serving image $IMAGE from tritonserver:$TRITON_IMAGE_TAG"
make image IMAGE="$IMAGE" TRITON_IMAGE_TAG="$TRITON_IMAGE_TAG"
echo "image size: $(docker image inspect --format '{{.Size}}' "$IMAGE" | awk '{printf "%.2f GB", $1 / 1e9}')"

step "image contents match export/serving_image.py and requirements-image.txt"
docker run --rm --gpus all --entrypoint python3 "$IMAGE" -m export.serving_image "$TRITON_IMAGE_TAG"

step "TensorRT plans, built in the image with its trtexec"
mkdir -p .cache/export
docker run --rm --gpus all --user "$(id -u):$(id -g)" \
    -v "$ROOT/model_repository:/models" -v "$ROOT/.cache/export:/cache" \
    --entrypoint python3 "$IMAGE" -m export.tensorrt_plan --repository /models --cache /cache build

step "plans match this image's TensorRT and every GPU"
docker run --rm --gpus all -v "$ROOT/model_repository:/models:ro" \
    --entrypoint python3 "$IMAGE" -m export.tensorrt_plan --repository /models check

step "serve the gpu variant (make serve VARIANT=gpu) and wait until ready"
mkdir -p "$REPORT_DIR"
setsid "$PY" -m tools.server --variant gpu --image "$IMAGE" \
    --http-port "$HTTP_PORT" --grpc-port "$GRPC_PORT" --metrics-port "$METRICS_PORT" >"$SERVER_LOG" 2>&1 &
SERVER_PID=$!
deadline=$((SECONDS + READY_TIMEOUT_S))
until curl -fsS "http://127.0.0.1:$HTTP_PORT/v2/health/ready" >/dev/null 2>&1; do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        tail -n 50 "$SERVER_LOG" >&2
        fail "the server exited before it was ready (log: $SERVER_LOG)"
    fi
    if ((SECONDS > deadline)); then
        tail -n 50 "$SERVER_LOG" >&2
        fail "not ready after ${READY_TIMEOUT_S}s (log: $SERVER_LOG)"
    fi
    sleep 2
done
echo "ready: gRPC 127.0.0.1:$GRPC_PORT, HTTP 127.0.0.1:$HTTP_PORT"

step "tests marked gpu: the served ensembles of every tier, and the GPU pieces in this process"
status=0
PEOPLE_GPU_CHECK=1 PEOPLE_SERVER_URL="127.0.0.1:$GRPC_PORT" PEOPLE_SERVER_HTTP_URL="127.0.0.1:$HTTP_PORT" \
    PEOPLE_SERVER_METRICS_URL="127.0.0.1:$METRICS_PORT" "$PY" -m pytest -m gpu -rs tests || status=$?
if ((status == 5)); then
    fail "pytest collected no test marked gpu"
elif ((status != 0)); then
    fail "pytest -m gpu exited with $status"
fi

step "perf_analyzer on every tier with real JPEGs ($REPORT_DIR/REPORT.md)"
"$PY" -m tools.evaluate.bench --url "127.0.0.1:$GRPC_PORT" --out "$REPORT_DIR"

step "stop the server"
stop_server

echo
echo "gpu-image-check: every step passed; report in $REPORT_DIR/REPORT.md, server log in $SERVER_LOG"
