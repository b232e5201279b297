"""Qt item models over local-API data (no widgets, no I/O)."""
