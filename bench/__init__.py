"""Benchmark harness for agentkeep: `python -m bench` (see bench/README.md)."""
