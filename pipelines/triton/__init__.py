"""The logic of the python-backend models; the served `model.py` files only import these classes."""
