"""Reproducible benchmark of the sidecar against nginx direct and a bare aiohttp proxy.

Run ``bash bench/run.sh`` or ``python -m bench``; see bench/README.md. Scenarios live in
:mod:`bench.harness` and in ``bench/scenario_*.py`` modules.
"""
