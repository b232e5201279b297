"""The relay every coordination server runs (DESIGN section 9): UDP on the relay port, and a
WebSocket on the HTTPS port for networks that block UDP. `core` holds the forwarding table,
`udp` the datagram endpoint, `routes` the HTTP side, `metrics` its counters."""
