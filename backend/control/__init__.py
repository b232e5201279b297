"""The backend's one coordination client: `client` (every call to the server, typed or not),
`errors` (the one reading of its error body), `failover` (the first server that answers),
`relay` (the local API's allow-listed admin calls), the netmap long poll, liveness and CA
pinning."""
