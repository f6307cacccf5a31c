"""Benchmarks of sandbox against the firejail floor and its peers: `python -m bench`."""
