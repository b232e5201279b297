"""HTTP routers of the coordination API, one module per resource."""
