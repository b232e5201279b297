"""The coordination server's connection layer: limits that hold before any request reaches the app.

- `protocol.guarded_protocol`: uvicorn's httptools protocol with TLS started per connection,
  a per-source connection cap checked at accept, a deadline for the TLS handshake plus the
  request head, and bounds on the head's size and header count (431);
- `sources.SourceGate`: open connections per source address (IPv4 address, IPv6 /64);
- `ratelog.RateLimitedLog`: one warning per kind and interval when a limit bites, with the count
  of the ones it held back, so an attack cannot flood the journal.
"""
