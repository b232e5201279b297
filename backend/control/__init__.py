"""The coordination client: one-shot calls, the netmap long poll and CA pinning."""
