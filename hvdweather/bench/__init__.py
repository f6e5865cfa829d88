"""Benchmarks: each writes one JSON line per measurement and prints a table built from them."""
