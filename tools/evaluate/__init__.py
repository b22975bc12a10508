"""Evaluations against a real server: the bad-input corpus, robustness and the benchmark.

They use the client side and the local server; nothing imports them.
"""
