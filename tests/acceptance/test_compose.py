"""docker-compose.yml is checked, not run (no Docker engine here): it is a valid Compose file, every
command it runs is a script of this repo that accepts those flags, every variable and env file it uses
has a committed example, and the image it builds has a Dockerfile."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from testkit.fleet import REPO, load_script

COMPOSE_FILE = REPO / "docker-compose.yml"
SCHEMA = REPO.parent / "shared" / "schemas" / "compose-spec.json"
# Compose's interpolation: $$ is a literal $, ${NAME}, ${NAME:-default}, ${NAME-default},
# ${NAME:?error}, ${NAME?error}, and $NAME.
VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<name>[A-Za-z_]\w*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}|(?P<bare>[A-Za-z_]\w*))"
)


def read_env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """``value`` with Compose's variables replaced, as ``docker compose config`` would."""
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def replace(match: re.Match[str]) -> str:
        if match.group("escaped"):
            return "$"
        name = match.group("name") or match.group("bare")
        op, arg = match.group("op"), match.group("arg") or ""
        current = env.get(name)
        missing = not current if op and op.startswith(":") else current is None
        if op in (":-", "-") and missing:
            return arg
        if op in (":?", "?") and missing:
            raise ValueError(f"required variable {name} is missing: {arg}")
        return current or ""

    return VARIABLE.sub(replace, value)


def variables_used(text: str) -> set[str]:
    return {m.group("name") or m.group("bare") for m in VARIABLE.finditer(text) if not m.group("escaped")}


@pytest.fixture(scope="module")
def example_env() -> dict[str, str]:
    """.env.example with its empty secrets filled in, as a user's .env would be."""
    values = read_env_file(REPO / ".env.example")
    return {name: value or f"test-{name.lower()}" for name, value in values.items()}


@pytest.fixture(scope="module")
def compose(example_env: dict[str, str]) -> dict[str, Any]:
    return dict(interpolate(yaml.safe_load(COMPOSE_FILE.read_text()), example_env))


def _built_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services that run this repo's image (the others run stock Redis and PostgreSQL)."""
    return {name: service for name, service in compose["services"].items() if "build" in service}


def test_the_file_follows_the_compose_specification(compose: dict[str, Any]) -> None:
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(compose), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(error.path)}: {error.message}" for error in errors)


def test_every_variable_has_an_example_and_the_secrets_are_required(example_env: dict[str, str]) -> None:
    text = COMPOSE_FILE.read_text()
    documented = read_env_file(REPO / ".env.example")
    assert variables_used(text) <= set(documented), "add them to .env.example"
    for secret in ("REDIS_PASSWORD", "POSTGRES_PASSWORD", "FLOWER_PASSWORD"):
        assert documented[secret] == "", f"{secret} must not have a value in the committed example"
        # Compose refuses to start while one is unset or empty.
        with pytest.raises(ValueError, match=secret):
            interpolate(yaml.safe_load(text), {**example_env, secret: ""})


def test_every_command_is_a_repo_script_that_accepts_its_flags(compose: dict[str, Any]) -> None:
    services = _built_services(compose)
    assert {"flower", "gpu-worker-0", "api-worker", "submit"} <= set(services)
    for name, service in services.items():
        command = service["command"]
        assert isinstance(command, list) and command[:1] == ["python"], name
        script = REPO / command[1]
        assert script.parent == REPO / "scripts" and script.is_file(), (name, command[1])
        module = load_script(script.name)
        options = module.build_parser()._option_string_actions
        # Exact flags only: argparse would also take an abbreviation that a later flag could make ambiguous.
        unknown = [arg for arg in command[2:] if arg.startswith("--") and arg.split("=")[0] not in options]
        assert not unknown, f"{name}: {script.name} has no flag {unknown}"
        try:
            module.parse_args(command[2:])
        except SystemExit as exit_:
            pytest.fail(f"{name}: {' '.join(command)} is refused by {script.name} (exit {exit_.code})")


def test_the_image_has_a_dockerfile_whose_sources_exist(compose: dict[str, Any]) -> None:
    for name, service in _built_services(compose).items():
        dockerfile = REPO / service["build"]["context"] / service["build"].get("dockerfile", "Dockerfile")
        assert dockerfile.is_file(), name
    dockerfile_text = (REPO / "Dockerfile").read_text()
    assert dockerfile_text.startswith("#") and "FROM python:3.11-slim" in dockerfile_text
    # torch's CUDA build is chosen (and with it the oldest driver it runs on), not left to PyPI's default.
    assert 'pip install --index-url "${TORCH_INDEX_URL}" "${TORCH_SPEC}"' in dockerfile_text
    for line in dockerfile_text.splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (REPO / source).exists(), line
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".env", "secrets.env", ".git", ".venv", "data"} <= set(ignored)


def test_env_files_have_examples_and_stay_out_of_git(compose: dict[str, Any]) -> None:
    gitignored = (REPO / ".gitignore").read_text().split()
    env_files = {".env"}
    for service in compose["services"].values():
        files = service.get("env_file", [])
        env_files.update([files] if isinstance(files, str) else files)
    assert "secrets.env" in env_files
    for env_file in env_files:
        example = REPO / f"{env_file}.example"
        assert example.is_file(), example
        assert f"/{env_file}" in gitignored, env_file
        # Examples name secrets; they never hold one.
        for name, value in read_env_file(example).items():
            if re.search(r"PASSWORD|KEY|TOKEN", name):
                assert value == "", f"{example.name}: {name} has a value"


def test_each_gpu_worker_reserves_its_own_gpu(compose: dict[str, Any]) -> None:
    reserved: list[str] = []
    for name, service in compose["services"].items():
        if not name.startswith("gpu-worker"):
            continue
        (device,) = service["deploy"]["resources"]["reservations"]["devices"]
        assert device["capabilities"] == ["gpu"] and device["driver"] == "nvidia", name
        reserved.extend(device["device_ids"])
        assert service["command"][-2:] == ["--hostname", name], "node names must differ"
    assert len(reserved) >= 1 and len(set(reserved)) == len(reserved)


def test_a_gpu_worker_that_cannot_start_is_not_restarted_forever(compose: dict[str, Any]) -> None:
    gpu_workers = {name: service for name, service in compose["services"].items() if name.startswith("gpu-")}
    assert gpu_workers
    for name, service in gpu_workers.items():
        policy, _, retries = service["restart"].partition(":")
        assert policy == "on-failure" and int(retries) >= 1, name
