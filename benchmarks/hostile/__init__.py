"""Benchmark study: slow hostile-input cases (run before a release)."""
