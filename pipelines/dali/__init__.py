"""DALI processing graphs shared by the GPU (`dali` backend) and cpu (python backend) models."""
