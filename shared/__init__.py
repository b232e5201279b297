"""Code the coordination server and the backend both use, and that belongs to neither.

A leaf of the design (tests/layering.toml): it imports nothing else of PCloud, and the server and
the backend may both import it. Today: X.509 building for the network CA (`pki`), the store's
error types (`errors`) and etcd (`etcd`: the v3 JSON gateway client, one member's certificate and
flags, cluster membership), which the server's store uses and the backend's HA jobs run; and
stopping asyncio tasks without losing a cancel of the caller (`tasks`).
"""
