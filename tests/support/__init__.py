"""Test support shared by the suites: a real coordination server process, waits, helpers."""
