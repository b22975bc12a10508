"""`make gpu-check`'s parts, one job each; `python -m tools.evaluate.gpu_check` runs them in order.

- `images`: the parity images (encodings and shapes where nvJPEG could differ) and the 1080p bench images;
- `models`: the export the check reads, and what the server loads from it;
- `pieces`: the served steps in one process (the letterbox graph, the detector's head, the postprocess);
- `parity`: each piece against its reference, within stated tolerances;
- `timing`: each step's images per second and the targets;
- `report`: bench/GPU_REPORT.md.
"""
