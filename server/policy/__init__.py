"""Policy documents (Headscale/Tailscale HuJSON subset) and the reachability engine."""
