"""PCloud backend: the privileged per-device daemon and the `pcloud` CLI over its local API."""
