"""Path safety is the ground RBAC stands on: every ambiguous spelling is refused."""

import pytest

from sidecar.pathsafety import check_path, has_method_override_query
from sidecar.problem import BadPath

# The path-ambiguity corpus. tests/security/test_path_bypass.py sends each of these over the
# wire; keep the list here so both the unit and the end-to-end checks use the same cases.
AMBIGUOUS_PATHS = [
    "/v1/%2e%2e/admin", "/v1/%2E%2E/admin", "/v1/.%2e/admin", "/v1/%2e./admin",
    "/v1/../admin", "/v1/./admin", "/v1/..", "/v1/.", "/..", "/v1/..;/admin",
    "/v1/admin;jsessionid=x", "/v1/admin;", "/v1;/admin",
    "/v1/a%2fb", "/v1/a%2Fb", "/v1/a%5cb", "/v1/a%5Cb", "/v1/a\\b", "/v1/a%00b",
    "/v1/a%0ab", "/v1/a%0d%0ab", "/v1/a%7fb", "/v1/a%25%32%66b", "/v1/a%252fb",
    "/v1/%c0%ae%c0%ae/admin", "/v1/%e0%80%ae", "/v1/%ff", "/v1/%80",
    "/v1/%61dmin", "/v1/adm%69n", "/v1/%2D", "/v1/a%3ab", "/v1/a%40b", "/v1/a%3bb",
    "/v1/a%", "/v1/a%2", "/v1/a%zz", "/v1/a%g0",
    "//v1/admin", "/v1//admin", "/v1/admin//",
    "v1/admin", "*", "http://evil/v1/admin", "",
    "/v1/\x00", "/v1/\ttab", "/v1/caf\u00e9", "/v1/a b", "/v1/a#frag", "/v1/a|b",
]
SAFE_PATHS = [
    "/", "/v1/health", "/v1/health/", "/v1/merchants/m-1/payments/p_2.json",
    "/v1/a%20b", "/v1/a%3Fb", "/v1/x:y@z", "/v1/~user", "/v1/a.b.c", "/v1/...",
    "/v1/.well-known/jwks.json", "/v1/a%7B%7D",
]


@pytest.mark.parametrize("path", AMBIGUOUS_PATHS)
def test_an_ambiguous_path_is_refused(path: str) -> None:
    with pytest.raises(BadPath):
        check_path(path)


@pytest.mark.parametrize("path", SAFE_PATHS)
def test_an_unambiguous_path_passes(path: str) -> None:
    check_path(path)


@pytest.mark.parametrize(
    ("query", "expected"),
    [("_method=DELETE", True), ("a=1&_METHOD=put", True), ("_method", True),
     ("x_method=1", False), ("a=_method", False), ("", False)],
)
def test_method_override_in_the_query_is_detected(query: str, expected: bool) -> None:
    assert has_method_override_query(query) is expected
