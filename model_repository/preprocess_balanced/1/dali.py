"""GPU variant of preprocess_balanced: the shared letterbox graph with nvJPEG (`mixed`) decoding.

The DALI backend serializes this at load (@autoserialize). Rendered by `make configs`.
"""

from nvidia.dali.plugin.triton import autoserialize

from pipelines.dali.letterbox import gpu_pipeline

preprocess = autoserialize(gpu_pipeline(tier="balanced"))
