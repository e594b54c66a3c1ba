"""Subcommands of the ``sidecar`` CLI, one module each.

Every module defines ``register(subparsers)``, which adds its parser and sets
``func=handler`` where ``handler(args) -> int`` returns the exit code (0 ok, 1 user error).
``sidecar/cli.py`` discovers the modules, so a stage adds a command without touching it.
"""
