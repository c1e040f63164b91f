"""Efficiency and speed benchmarks of blvnet-jax (docs/efficiency.md, docs/performance.md)."""
