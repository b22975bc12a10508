"""The local server: launch Triton (`triton`), drain it, watch its health, and `make serve` (`serve`).

Imports `pipelines` only; evaluations and tests build on it, the client side never does.
"""
