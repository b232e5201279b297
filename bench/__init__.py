"""Benchmarks of PCloud against the targets of DESIGN section 7 (figures, not timed tests)."""
