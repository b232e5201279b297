"""The backend's side of the relay (DESIGN section 9): `manager` runs it, `link` talks to one
relay, `proxy` is a relayed peer's local endpoint, `paths` decides who is relayed."""
