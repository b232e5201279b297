"""Reach across NATs, the backend's side (DESIGN section 9): an advertised endpoint given by
name (`advertise`), and the kind of NAT this device is behind (`probe`, `kind`, `monitor`)."""
