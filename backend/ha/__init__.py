"""High availability of the control plane: our etcd member on this server, quorum rules."""
