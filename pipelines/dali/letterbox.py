"""The DALI letterbox graph, written once for the GPU (`mixed`) and CPU variants.

It reproduces Ultralytics' `LetterBox(auto=False, center=True)` as used by
`YOLO.predict`: scale by r = min(S/h, S/w), resize each side to
max(round(side * r), 1) with Python's round-half-even, bilinear without
antialiasing (cv2.INTER_LINEAR), pad with 114 putting floor(padding / 2) on the
left and top. The sizes are computed in float64, as Python does, from the
header (`peek_image_shape`) before decoding, so the resize and pad are argument
inputs and the GPU variant never waits on a device-to-host copy.
"""

from __future__ import annotations

from collections.abc import Callable

import nvidia.dali.fn as fn
import nvidia.dali.math as dmath
import nvidia.dali.types as types
from nvidia.dali import pipeline_def
from nvidia.dali.data_node import DataNode
from nvidia.dali.pipeline import Pipeline

from pipelines import spec


def _round_half_even(x: DataNode) -> DataNode:
    """Python's round() for non-negative values; DALI's own casts round half away from zero."""
    floor = dmath.floor(x)
    frac = x - floor
    odd = floor - 2.0 * dmath.floor(floor / 2.0)
    return floor + (frac > 0.5) + (frac == 0.5) * odd


def letterbox(encoded: DataNode, decoder_device: str) -> tuple[DataNode, DataNode, DataNode]:
    """Decode encoded images and letterbox them to the detector's input.

    Returns the IMAGES tensor (float32 CHW in [0, 1]), the GEOMETRY tensor
    [pad_left, pad_top, resized_w, resized_h, original_w, original_h] (float32)
    that the postprocess step uses to map boxes back to original pixels, and
    ORIGINAL: the decoded RGB images (HWC uint8), zero-padded to the largest
    of the batch so that any split of the batch into requests is uniform.
    """
    size = float(spec.IMAGE_SIZE)
    # DALI 2.1 (the serving image's): only the experimental operators apply EXIF orientation.
    hwc = fn.cast(fn.experimental.peek_image_shape(encoded, adjust_orientation=True), dtype=types.FLOAT64)
    h, w = hwc[0], hwc[1]
    r = dmath.min(size / h, size / w)
    new_w = dmath.max(_round_half_even(w * r), 1.0)
    new_h = dmath.max(_round_half_even(h * r), 1.0)
    left = dmath.floor((size - new_w) / 2.0)
    top = dmath.floor((size - new_h) / 2.0)

    decoded = fn.experimental.decoders.image(
        encoded, device=decoder_device, output_type=types.RGB, adjust_orientation=True
    )
    original = fn.pad(decoded, axes=[0, 1], fill_value=0)
    image = fn.resize(
        decoded,
        resize_x=fn.cast(new_w, dtype=types.FLOAT),
        resize_y=fn.cast(new_h, dtype=types.FLOAT),
        interp_type=types.INTERP_LINEAR,
        antialias=False,
        dtype=types.FLOAT,
    )
    image = fn.cast(image, dtype=types.UINT8)  # Ultralytics pads and feeds uint8 pixels
    image = fn.slice(
        image,
        start=fn.cast(fn.stack(-top, -left), dtype=types.INT32),
        shape=[spec.IMAGE_SIZE, spec.IMAGE_SIZE],
        axes=[0, 1],
        out_of_bounds_policy="pad",
        fill_values=spec.PAD_VALUE,
    )
    images = fn.crop_mirror_normalize(image, dtype=types.FLOAT, output_layout="CHW", mean=[0.0], std=[255.0])
    geometry = fn.cast(fn.stack(left, top, new_w, new_h, w, h), dtype=types.FLOAT)
    return images, geometry, original


# DALI's CPU threads on the GPU variant: decode is nvJPEG, these only parse headers
# and feed the GPU (the DALI backend README advises one instance, more threads).
GPU_CPU_THREADS = 4


def gpu_pipeline(tier: str, device_id: int | None = 0) -> Callable[..., Pipeline]:
    """The `@pipeline_def` the DALI backend serializes for `preprocess_<tier>` (nvJPEG decode).

    `device_id=None` builds the same graph for serialization on a machine without a GPU.
    """
    batching = spec.tier(tier).batching(spec.Variant.GPU)

    @pipeline_def(
        batch_size=batching.max_batch_size,
        num_threads=GPU_CPU_THREADS,
        device_id=device_id,
        output_dtype=[types.FLOAT, types.FLOAT, types.UINT8],
        output_ndim=[len(spec.IMAGES.dims), len(spec.GEOMETRY.dims), len(spec.ORIGINAL.dims)],
    )
    def preprocess() -> tuple[DataNode, DataNode, DataNode]:
        encoded = fn.external_source(name=spec.IMAGE.name, dtype=types.UINT8, ndim=1, device="cpu")
        return letterbox(encoded, decoder_device="mixed")

    return preprocess


def cpu_pipeline(batch_size: int, num_threads: int = spec.CPU_THREADS) -> Pipeline:
    """The same graph on CPU operators, built and ready for `pipe.run(IMAGE=[...])`."""

    @pipeline_def(batch_size=batch_size, num_threads=num_threads, device_id=None, prefetch_queue_depth=1)
    def preprocess() -> tuple[DataNode, DataNode, DataNode]:
        encoded = fn.external_source(name=spec.IMAGE.name, dtype=types.UINT8, ndim=1)
        return letterbox(encoded, decoder_device="cpu")

    pipe = preprocess()
    pipe.build()
    return pipe
