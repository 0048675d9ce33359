"""quantkit benchmarks: one folder per study, shared pieces in ``_harness`` (README.md)."""
