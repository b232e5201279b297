"""Passwords, tokens and the TLS certificate authority of the coordination server."""
