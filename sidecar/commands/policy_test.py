"""``sidecar policy-test``: run table-driven policy cases against a config."""

from __future__ import annotations

import argparse
import sys

from sidecar.cli import add_config_argument, load_config_or_report
from sidecar.policy import CaseFileError, PolicyEngine, load_cases, run_case


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "policy-test", help="run table-driven policy cases",
        description="Evaluate every case (claims, request, expected allow/deny and reason) "
                    "against the config's rbac rules. Exit 1 on any mismatch or a bad file.",
    )
    add_config_argument(parser)
    parser.add_argument("cases", metavar="CASES.yaml")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    loaded = load_config_or_report(args.config)
    if loaded is None:
        return 1
    try:
        cases = load_cases(args.cases)
    except CaseFileError as exc:
        print(f"{args.cases}: invalid cases file", file=sys.stderr)
        for line in str(exc).splitlines():
            print(f"  {line}", file=sys.stderr)
        return 1
    engine = PolicyEngine(loaded.config)
    failed = 0
    for case in cases:
        result = run_case(engine, case)
        ev = result.evaluation
        why = ev.reason
        if ev.decision is not None and ev.detail not in ("ok", "public", ev.reason):
            why += f": {ev.detail}"
        got = f"{'allow' if ev.allowed else 'deny'} ({why})"
        if result.passed:
            print(f"PASS  {case.name}: {got}")
        else:
            failed += 1
            print(f"FAIL  {case.name}: {result.mismatch}")
    passed = len(cases) - failed
    print(f"{len(cases)} cases: {passed} passed, {failed} failed")
    return 1 if failed else 0
