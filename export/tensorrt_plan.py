"""Build one TensorRT engine per tier from the ONNX, with the tier's optimization profile.

Plans only load with the TensorRT version and GPU they were built for, so this
runs inside the serving image (see Dockerfile.triton) on the serving GPU, and
the manifest records both; `make serve` refuses a plan whose record differs.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pipelines import manifest, spec

log = logging.getLogger(__name__)

WORKSPACE_BYTES = 4 << 30


def available() -> str | None:
    """None when plans can be built here, else the reason they cannot."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "TensorRT is not installed (it is in the serving image: `make export` runs there on a GPU host)"
    try:
        import torch
    except ImportError:
        return "torch is needed to read the GPU's name"
    if not torch.cuda.is_available():
        return "no CUDA GPU is visible"
    return None


def profile(batching: spec.Batching) -> tuple[int, int, int]:
    """(min, opt, max) batch of a tier's detector: opt is the tier's largest preferred batch."""
    return 1, max(batching.preferred_batch_sizes), batching.max_batch_size


def gender_profile() -> tuple[int, int, int]:
    """(min, opt, max) batch of the gender classifier: BLS chunks fill up to its max batch."""
    top = spec.GENDER_BATCHING[spec.Variant.GPU].max_batch_size
    return 1, top, top


def build(
    onnx_path: Path,
    plan_path: Path,
    item_dims: tuple[int, ...],
    batch_profile: tuple[int, int, int],
    timing_cache: Path,
    fp16: bool = True,
) -> manifest.Plan:
    """Build and write `plan_path` for an ONNX with one input [batch, *item_dims]; return manifest facts."""
    import tensorrt as trt
    import torch

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.exists() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    lo, opt, hi = batch_profile
    input_name = network.get_input(0).name
    opt_profile = builder.create_optimization_profile()
    opt_profile.set_shape(input_name, (lo, *item_dims), (opt, *item_dims), (hi, *item_dims))
    config.add_optimization_profile(opt_profile)
    log.info("building TensorRT plan %s (batch %d/%d/%d, fp16=%s); this takes minutes", plan_path, lo, opt, hi, fp16)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build {plan_path}; see the log above")
    plan_path.write_bytes(bytes(serialized))
    timing_cache.write_bytes(bytes(config.get_timing_cache().serialize()))
    major, minor = torch.cuda.get_device_capability()
    return manifest.Plan(
        tensorrt_version=trt.__version__,
        gpu_name=torch.cuda.get_device_name(),
        compute_capability=f"{major}.{minor}",
        precision="fp16" if fp16 else "fp32",
        profile=(lo, opt, hi),
    )
