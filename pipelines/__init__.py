"""Person detection served by Triton: the spec, the processing and the served models' logic."""
