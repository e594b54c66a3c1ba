"""``sidecar check`` as a subprocess: exit codes and located errors."""

from pathlib import Path

from tests.fixtures.proxy import run_cli


def test_a_valid_config_passes_with_a_summary(tmp_path: Path) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text("upstream: {url: 'http://127.0.0.1:8080'}\n")
    result = run_cli("check", "-c", str(path))
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout and "upstream: http://127.0.0.1:8080" in result.stdout


def test_an_invalid_config_names_the_field_and_line_and_exits_1(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("server:\n  listen: 0.0.0.0:8000\n  workerz: 2\n")
    result = run_cli("check", "-c", str(path))
    assert result.returncode == 1
    assert "server.workerz: unknown key (not part of the config schema) (line 3)" in result.stderr


def test_the_config_path_defaults_to_the_environment_variable(tmp_path: Path) -> None:
    path = tmp_path / "env.yaml"
    path.write_text("bogus: 1\n")
    result = run_cli("check", env={"SIDECAR_CONFIG": str(path)})
    assert result.returncode == 1 and "bogus: unknown key" in result.stderr


def test_a_usage_error_exits_2() -> None:
    assert run_cli("check", "--no-such-flag").returncode == 2
    assert run_cli().returncode == 2


def test_every_command_has_help() -> None:
    listing = run_cli("--help")
    assert listing.returncode == 0
    section = listing.stdout.split("COMMAND\n", 1)[1].split("\noptions:", 1)[0]
    commands = [line.split()[0] for line in section.splitlines()
                if line.startswith("    ") and not line.startswith("     ")]
    assert "run" in commands and "check" in commands
    for command in commands:
        result = run_cli(command, "--help")
        assert result.returncode == 0, command


def test_conflicting_rbac_rules_are_rejected_naming_both(tmp_path: Path) -> None:
    path = tmp_path / "conflict.yaml"
    path.write_text(
        "rbac:\n"
        "  rules:\n"
        "    - {name: read-a, path: '/v1/m/{id}', methods: [GET], public: true}\n"
        "    - {name: read-b, path: '/v1/m/{merchant}', methods: [GET], public: true}\n")
    result = run_cli("check", "-c", str(path))
    assert result.returncode == 1
    assert "rbac.rules[1]" in result.stderr
    assert "read-a" in result.stderr and "(line 4)" in result.stderr
