"""The K3s driver: commands, config and lifecycle of K3s on the mesh."""
