"""Process supervision for the daemons a server-role backend keeps running (K3s, the
coordination server, etcd): running programs through one seam, and a supervised child or a
systemd unit that restarts them."""
