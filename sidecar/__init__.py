"""Payments security sidecar: a reverse proxy that authenticates, authorises, rate-limits,
verifies message signatures and audits every request before it reaches a payments backend."""

__version__ = "0.1.0"
