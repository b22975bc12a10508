"""Host (CPU) processing with OpenCV: the cpu variant's letterbox."""
