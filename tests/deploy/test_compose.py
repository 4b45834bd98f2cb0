"""deploy/compose: `docker-compose config` validates it with the .env.example (Debian's docker-compose,
when installed), and its structure is what the team shape needs (always, with PyYAML)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
import yaml

from tests.e2e.processes import ROOT

COMPOSE = ROOT / "deploy" / "compose"
SECRETS = ("cairn_secret_key", "cairn_database_url", "cairn_metrics_token", "postgres_password",
           "grafana_admin_password", "tls.crt", "tls.key")
TEAM = {"postgres", "redis", "migrate", "web", "worker-ingest", "worker-index", "worker-inference", "beat",
        "nginx", "prometheus", "grafana"}


def _env_example() -> dict[str, str]:
    pairs = {}
    for line in (COMPOSE / ".env.example").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip()
    return pairs


@pytest.fixture
def secrets_dir(tmp_path):
    for name in SECRETS:
        (tmp_path / name).write_text("not-a-real-secret\n")
    return tmp_path


def _config(secrets_dir, *files: str) -> dict:
    """The merged configuration: docker-compose's own rendering when it is installed."""
    tool = shutil.which("docker-compose")
    if tool is None:
        pytest.skip("docker-compose is not installed (apt-get install docker-compose)")
    argv = [tool, "--env-file", str(COMPOSE / ".env.example"), "--project-directory", str(COMPOSE)]
    for name in files:
        argv += ["-f", str(COMPOSE / name)]
    env = {**os.environ, "CAIRN_SECRETS_DIR": str(secrets_dir)}
    done = subprocess.run([*argv, "config"], capture_output=True, text=True, env=env, cwd=COMPOSE)
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout)


def test_docker_compose_validates_the_team_shape_and_the_cpu_override(secrets_dir):
    team = _config(secrets_dir, "docker-compose.yml")
    assert set(team["services"]) == TEAM
    cpu = _config(secrets_dir, "docker-compose.yml", "docker-compose.cpu.yml")
    assert cpu["services"]["worker-inference"]["profiles"] == ["gpu"]  # not started without a GPU
    replacement = cpu["services"]["worker-inference-cpu"]
    assert "deploy" not in replacement and replacement["command"][:2] == ["worker", "inference"]
    assert replacement["environment"]["CAIRN_LLM_DEVICE"] == "cpu"


def test_structure_of_the_team_shape():
    config = yaml.safe_load((COMPOSE / "docker-compose.yml").read_text())
    services = config["services"]
    assert set(services) == TEAM

    redis = " ".join(map(str, services["redis"]["command"]))
    assert "--appendonly yes" in redis and "--maxmemory-policy noeviction" in redis
    assert any(v.endswith(":/data") for v in services["redis"]["volumes"])

    for name in TEAM - {"migrate", "beat"}:
        assert "healthcheck" in services[name], name
    assert "/readyz" in " ".join(services["web"]["healthcheck"]["test"])

    # Everything that runs Cairn waits for the one-off migration, which waits for the databases
    assert services["migrate"]["command"] == ["migrate"] and services["migrate"]["restart"] == "no"
    for name in ("web", "worker-ingest", "worker-index", "worker-inference", "beat"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully", name
        env = services[name]["environment"]
        assert env["CAIRN_SECRET_KEY_FILE"].startswith("/run/secrets/") and "CAIRN_SECRET_KEY" not in env
        assert env["DATABASE_URL_FILE"].startswith("/run/secrets/") and "DATABASE_URL" not in env

    # Roles are the entrypoint's
    entrypoint = (ROOT / "deploy" / "docker" / "entrypoint.sh").read_text()
    for name in ("migrate", "web", "worker-ingest", "worker-index", "worker-inference", "beat"):
        assert f"\n  {services[name]['command'][0]})" in entrypoint, name
    assert services["worker-index"]["command"] == ["worker", "index"]

    inference = services["worker-inference"]
    (device,) = inference["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert any(v.endswith(":/models:ro") for v in inference["volumes"])

    # Secrets come from files; nothing secret is in the environment file
    assert all("file" in spec for spec in config["secrets"].values())
    example = _env_example()
    assert not any(word in key for key in example for word in ("PASSWORD", "SECRET_KEY", "TOKEN"))
    assert "CAIRN_HOST" in example

    # Only nginx is trusted for X-Forwarded-*, and Prometheus scrapes with the token from a file
    nginx_ip = services["nginx"]["networks"]["cairn"]["ipv4_address"]
    assert services["web"]["environment"]["CAIRN_TRUSTED_PROXIES"] == nginx_ip
    assert "cairn_metrics_token" in services["prometheus"]["secrets"]
    scrape = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())["scrape_configs"][0]
    assert scrape["authorization"]["credentials_file"] == "/run/secrets/cairn_metrics_token"
    assert scrape["static_configs"][0]["targets"] == ["web:8000"]
    for volume in services["prometheus"]["volumes"] + services["grafana"]["volumes"] + services["nginx"]["volumes"]:
        source = volume.split(":")[0]
        if source.startswith("../"):
            assert (COMPOSE / source).exists(), source
