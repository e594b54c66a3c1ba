"""``sidecar demo``: a mock payments backend with the sidecar in front of it, on loopback."""
