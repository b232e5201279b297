"""End-to-end scenarios: PCloud on lab hosts (network namespaces, real wireguard-go)."""
