"""The packet filter: the coordination server's per-node rules enforced with nftables on the
WireGuard interface (DESIGN section 10). `ruleset` turns rules into nftables JSON (pure), `nft`
runs `nft -j`, `enforcer` keeps the one table of ours in step with the netmap."""
