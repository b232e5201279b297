"""PCloud coordination server: users, devices, policy and netmaps over HTTPS."""

__version__ = "0.1.0"
