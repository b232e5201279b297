"""Reach from outside the LAN (DESIGN section 9), the server's side: the cluster's public URLs
in every server's certificate (`public`), the public address behind a `--public-url` name
re-resolved and re-advertised (`public`), and the UDP "what is my address" echo (`echo`), all run
by `service.Reach` for the app's life."""
