"""One dialog per module: login, first-run wizard, add this machine as server."""
