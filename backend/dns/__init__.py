"""Names for devices (DESIGN section 11): a resolver in the backend answers `HOST.<domain>` from
the netmap and forwards every other query to the resolvers the system had; the system is pointed
at it through systemd-resolved or a managed, restorable /etc/resolv.conf.

Modules: `names` (the netmap as a lookup table), `server` (the asyncio UDP/TCP resolver),
`resolvconf` (parsing, the managed rewrite and its byte-exact restore), `resolved`
(systemd-resolved per-link settings) and `manager` (what the backend core calls).
"""
