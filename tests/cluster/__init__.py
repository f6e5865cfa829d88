"""Test machinery for runs beyond one process: network-namespace hosts (`netns`) on this machine, and a
real SLURM cluster started from Debian's packages (`slurm`; one per test session, see tests/conftest.py)."""
