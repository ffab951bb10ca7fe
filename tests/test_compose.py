"""docker-compose.yml and the Dockerfile: checked by `docker compose config` where the compose
plugin is installed, otherwise by reading the file the way compose would (YAML, `${VAR:-default}`
interpolation, `<<` merges, null environment values taken from the shell)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
MODAL = {"MODAL_TOKEN_ID": "ak-test", "MODAL_TOKEN_SECRET": "as-test", "MODAL_ENVIRONMENT": "speedq-ci"}
_VAR = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")


def compose_plugin() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0


def by_compose(env: dict[str, str]) -> dict:
    done = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE), "config", "--format", "json"],
        env=env, capture_output=True, text=True, check=True,
    )
    return json.loads(done.stdout)


def by_reading(env: dict[str, str]) -> dict:
    text = _VAR.sub(lambda m: env.get(m.group(1)) or m.group(2) or "", COMPOSE.read_text())
    resolved = yaml.safe_load(text)
    for service in resolved["services"].values():
        environment = service.get("environment") or {}
        for name, value in list(environment.items()):
            if value is None:  # compose takes it from the shell, or leaves it out
                if name in env:
                    environment[name] = env[name]
                else:
                    del environment[name]
    return resolved


def shell(env: dict[str, str]) -> dict[str, str]:
    """This shell's environment without any Modal or speedq settings of its own, plus `env`."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MODAL_", "SPEEDQ_"))}
    return {**clean, **env}


def resolve(env: dict[str, str]) -> dict:
    return by_compose(shell(env)) if compose_plugin() else by_reading(shell(env))


def mounts(service: dict) -> list[tuple[str, str]]:
    """(source, target) of each volume, from the short (`a:b`) or the long form."""
    found = []
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
        else:
            source, target = volume["source"], volume["target"]
        found.append((source, target))
    return found


def env_of(service: dict) -> dict[str, str]:
    return {k: str(v) for k, v in (service.get("environment") or {}).items() if v is not None}


def test_compose_file_with_modal_credentials_and_worker_count() -> None:
    config = resolve({**MODAL, "SPEEDQ_WORKERS": "5"})
    services = config["services"]

    assert set(services) == {"redis", "worker", "notifier", "api"}
    redis = services["redis"]
    command = " ".join(redis["command"])
    assert "--appendonly yes" in command and "--dir /data" in command
    assert ("redis-data", "/data") in mounts(redis)
    assert "redis-data" in config["volumes"]  # a named volume: the data outlives the container

    worker, api = services["worker"], services["api"]
    assert int(worker["deploy"]["replicas"]) == 5
    assert worker["command"][:2] == ["speedq", "worker"]
    assert api["command"] == ["speedq", "api", "--host", "0.0.0.0", "--port", "8000"]
    assert services["notifier"]["command"] == ["speedq", "worker", "--notify-only"]
    for service in (worker, api, services["notifier"]):
        env = env_of(service)
        assert env["SPEEDQ_REDIS_URL"] == "redis://redis:6379/0"
        assert {k: env.get(k) for k in MODAL} == MODAL
        assert "redis" in service["depends_on"]


def test_compose_defaults_when_nothing_is_set() -> None:
    config = resolve({})
    worker = config["services"]["worker"]

    assert int(worker["deploy"]["replicas"]) == 2
    assert not set(MODAL) & set(env_of(worker))  # unset credentials are not passed as empty ones
    assert env_of(worker)["SPEEDQ_BACKEND"] == "modal"


def test_dockerfile_builds_the_package_with_the_api_extra() -> None:
    text = (ROOT / "Dockerfile").read_text()

    assert re.findall(r"^FROM .*", text, re.M) == ["FROM python:3.11-slim"]
    assert re.search(r"apt-get install .*\bgit\b", text)
    assert "pip install --no-cache-dir '.[api]'" in text
    assert "COPY speedq ./speedq" in text


@pytest.mark.skipif(not compose_plugin(), reason="the docker compose plugin is not installed here")
def test_compose_reading_agrees_with_docker_compose() -> None:
    """Where both work, the fallback reading must see what compose sees."""
    env = shell({**MODAL, "SPEEDQ_WORKERS": "3"})
    ours, theirs = by_reading(env), by_compose(env)
    for name in ("redis", "worker", "api"):
        assert env_of(ours["services"][name]) == env_of(theirs["services"][name])
        assert mounts(ours["services"][name]) == mounts(theirs["services"][name])
