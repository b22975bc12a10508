"""The DALI letterbox graph: the GPU variant's preprocess, and the same graph on CPU operators.

It reproduces Ultralytics' `LetterBox(auto=False, center=True)` as used by
`YOLO.predict`, placing the image as `pipelines.geometry.fit` says (run here on
DALI nodes): bilinear resize without antialiasing (cv2.INTER_LINEAR), padding
114. The sizes come from the header (`peek_image_shape`) before decoding, so
the resize and pad are argument inputs and the GPU variant never waits on a
device-to-host copy. The cpu variant letterboxes with OpenCV instead
(`pipelines.opencv.letterbox`, four times cheaper per image on a CPU); the CPU
graph here is how the GPU graph's arithmetic is tested without a GPU.
"""

from __future__ import annotations

from collections.abc import Callable

import nvidia.dali.fn as fn
import nvidia.dali.math as dmath
import nvidia.dali.types as types
from nvidia.dali import pipeline_def
from nvidia.dali.data_node import DataNode
from nvidia.dali.pipeline import Pipeline

from pipelines import geometry, spec


def _round_half_even(x: DataNode) -> DataNode:
    """Python's round() for non-negative values; DALI's own casts round half away from zero."""
    floor = dmath.floor(x)
    frac = x - floor
    odd = floor - 2.0 * dmath.floor(floor / 2.0)
    return floor + (frac > 0.5) + (frac == 0.5) * odd


DALI_ARITHMETIC = geometry.Arithmetic(
    floor=dmath.floor, round_half_even=_round_half_even, minimum=dmath.min, maximum=dmath.max
)


def letterbox(
    encoded: DataNode, decoder_device: str, fancy_upsampling: bool = spec.GPU_JPEG_FANCY_UPSAMPLING
) -> tuple[DataNode, DataNode, DataNode]:
    """Decode encoded images and letterbox them to the detector's input.

    Returns the IMAGES tensor (float32 CHW in [0, 1]), the GEOMETRY tensor
    [pad_left, pad_top, resized_w, resized_h, original_w, original_h] (float32)
    that the postprocess step uses to map boxes back to original pixels, and
    ORIGINAL: the decoded RGB images (HWC uint8), zero-padded to the largest
    of the batch so that any split of the batch into requests is uniform.
    """
    # DALI 2.1 (the serving image's): only the experimental operators apply EXIF orientation.
    hwc = fn.cast(fn.experimental.peek_image_shape(encoded, adjust_orientation=True), dtype=types.FLOAT64)
    h, w = hwc[0], hwc[1]
    left, top, new_w, new_h = geometry.fit(h, w, DALI_ARITHMETIC)

    decoded = fn.experimental.decoders.image(
        encoded,
        device=decoder_device,
        output_type=types.RGB,
        adjust_orientation=True,
        hw_decoder_load=spec.GPU_HW_DECODER_LOAD,  # the mixed decoder's share for the hardware engine
        jpeg_fancy_upsampling=fancy_upsampling,  # the mixed decoder's chroma upsampling as libjpeg-turbo's
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
    placed = fn.cast(fn.stack(left, top, new_w, new_h, w, h), dtype=types.FLOAT)
    return images, placed, original


def gpu_pipeline(tier: str, device_id: int | None = 0,
                 fancy_upsampling: bool = spec.GPU_JPEG_FANCY_UPSAMPLING) -> Callable[..., Pipeline]:  # fmt: skip
    """The `@pipeline_def` of `preprocess_<tier>`'s GPU graph (nvJPEG decode).

    `device_id=None` builds the same graph for serialization on a machine without a GPU;
    `fancy_upsampling` is there for `make gpu-check`, which measures the gap to Ultralytics both ways.
    """
    batching = spec.tier(tier).batching(spec.Variant.GPU)

    @pipeline_def(
        batch_size=batching.max_batch_size,
        num_threads=spec.GPU_DALI_THREADS,
        device_id=device_id,
        output_dtype=[types.FLOAT, types.FLOAT, types.UINT8],
        output_ndim=[len(spec.IMAGES.dims), len(spec.GEOMETRY.dims), len(spec.ORIGINAL.dims)],
    )
    def preprocess() -> tuple[DataNode, DataNode, DataNode]:
        encoded = fn.external_source(name=spec.IMAGE.name, dtype=types.UINT8, ndim=1, device="cpu")
        return letterbox(encoded, decoder_device="mixed", fancy_upsampling=fancy_upsampling)

    return preprocess


def cpu_pipeline(batch_size: int, num_threads: int = spec.CPU_THREADS) -> Pipeline:
    """The same graph on CPU operators, built and ready for `pipe.run(IMAGE=[...])`: the GPU graph's
    arithmetic and geometry checked without a GPU (tests, `make gpu-check`'s reference)."""

    @pipeline_def(batch_size=batch_size, num_threads=num_threads, device_id=None, prefetch_queue_depth=1)
    def preprocess() -> tuple[DataNode, DataNode, DataNode]:
        encoded = fn.external_source(name=spec.IMAGE.name, dtype=types.UINT8, ndim=1)
        return letterbox(encoded, decoder_device="cpu")

    pipe = preprocess()
    pipe.build()
    return pipe
