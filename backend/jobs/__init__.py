"""Long-running, resumable, step-by-step jobs (install-server, join-server, ...)."""
