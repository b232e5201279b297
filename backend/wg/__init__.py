"""WireGuard drivers: kernel (netlink) and userspace (wireguard-go over UAPI)."""
