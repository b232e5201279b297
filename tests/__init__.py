"""PCloud's test suites (a package so that `tests.lab` is importable as `python -m tests.lab.*`)."""
