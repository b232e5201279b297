"""The backend's local HTTP API on a Unix socket, its client and its schemas."""
