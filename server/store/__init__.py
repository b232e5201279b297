"""Persistence of users, nodes, keys, policy and the version counter behind one interface."""
