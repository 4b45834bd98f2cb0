"""Debian's Prometheus, with the shipped scrape configuration and alert rules, scraping a started Cairn
(two web worker processes) after an ingest and searches: the documented series, with the right values,
through Prometheus' own query API; every Grafana panel's query answers."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.e2e.processes import ROOT, Http, Process, child_env, free_port, manage, run_manage
from tests.inference.tiny_models import build_tiny_qwen2

pytestmark = pytest.mark.slow

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
DEPLOY = ROOT / "deploy"
SEARCHES = 7
# Panels whose series need what this test's shape has not: a GPU, or Celery queues (the team shape).
NO_DATA_HERE = {"GPU memory": "no GPU", "Celery queue depth": "personal shape: no Celery queues"}


def test_shipped_alert_rules_and_config_pass_promtool(tmp_path):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    done = subprocess.run([promtool, "check", "rules", str(DEPLOY / "prometheus" / "alerts.yml")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    config = _config(tmp_path, port=8000, token_file=tmp_path / "token")
    (tmp_path / "token").write_text("x")
    done = subprocess.run([promtool, "check", "config", str(config)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def _config(tmp_path: Path, *, port: int, token_file: Path) -> Path:
    """The shipped configuration, adapted only in addresses, paths and the scrape interval."""
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    config["global"]["scrape_interval"] = config["global"]["evaluation_interval"] = "1s"
    config["rule_files"] = [str(DEPLOY / "prometheus" / "alerts.yml")]
    (job,) = config["scrape_configs"]
    job["authorization"]["credentials_file"] = str(token_file)
    job["static_configs"] = [{"targets": [f"127.0.0.1:{port}"]}]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def _query(base: str, expr: str) -> list[dict]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as response:
        body = json.loads(response.read())
    assert body["status"] == "success", body
    return body["data"]["result"]


def _wait_value(base: str, expr: str, want: float, timeout: float = 40) -> float:
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        result = _query(base, expr)
        value = float(result[0]["value"][1]) if result else None
        if value == want:
            return value
        time.sleep(0.5)
    raise AssertionError(f"{expr} = {value}, wanted {want}")


@pytest.fixture
def cairn(tmp_path):
    port = free_port()
    token = "metrics-" + "k" * 32
    model = build_tiny_qwen2(tmp_path / "tiny-qwen2")
    env = child_env(CAIRN_DATA_DIR=str(tmp_path / "data"), CAIRN_TASKS="inline", CAIRN_METRICS_TOKEN=token,
                    CAIRN_LLM_BACKEND="transformers", CAIRN_LLM_PATH=model)
    run_manage(env, "migrate", "--verbosity", "0")
    web = Process("cairn_web", manage("cairn_web", "--host", "127.0.0.1", "--port", str(port), "--workers", "2"),
                  env, tmp_path)
    http = Http(f"http://127.0.0.1:{port}")
    try:
        http.wait_until_up(web)
        yield http, port, token, tmp_path / "data" / "metrics"
    finally:
        web.stop()


def test_prometheus_scrapes_cairn_and_finds_its_series(cairn, tmp_path):
    if not Path(PROMETHEUS).exists():
        pytest.skip("prometheus is not installed (apt-get install prometheus)")
    http, port, token, metrics_dir = cairn
    token_file = tmp_path / "metrics_token"
    token_file.write_text(token + "\n")
    prom_port = free_port()
    prometheus = Process("prometheus", [PROMETHEUS, f"--config.file={_config(tmp_path, port=port, token_file=token_file)}",
                                        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                        f"--web.listen-address=127.0.0.1:{prom_port}"], child_env(), tmp_path)
    base = f"http://127.0.0.1:{prom_port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert prometheus.alive(), prometheus.log()
            try:
                if _query(base, 'up{job="cairn"} == 1'):
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, prometheus.log()
            time.sleep(0.5)

        # When a document is ingested and searched, on a server with two worker processes
        status, collection = http.post_json("/api/v1/collections", {"name": "Pumps"})
        assert status == 201
        status, document = http.upload(f"/api/v1/collections/{collection['id']}/documents", "pumps.txt",
                                       b"The pump room access code is heron-7.\n\nValves are checked every day.")
        assert status == 201 and http.wait_for_document(document["id"])["status"] == "INDEXED"
        for _ in range(SEARCHES):
            assert http.get("/api/v1/search?q=pump+room+code")[0] == 200
        status, answer = http.post_json("/api/v1/ask", {"question": "What is the pump room code?", "max_new_tokens": 8})
        assert status == 200, answer

        # Then Prometheus holds every search, counted once, whichever worker answered it
        _wait_value(base, 'sum(cairn_http_requests_total{route="api/v1/search",status="200"})', SEARCHES)
        _wait_value(base, 'sum(cairn_search_duration_seconds_count{leg="total"})', SEARCHES + 1)  # the ask searched too
        _wait_value(base, 'cairn_ingestion_jobs{state="INDEXED"}', 1)
        _wait_value(base, 'cairn_ingestion_jobs{state="FAILED"}', 0)
        _wait_value(base, "cairn_index_version >= 1", 1)
        assert float(_query(base, "cairn_index_chunks")[0]["value"][1]) >= 1
        p95 = float(_query(base, 'histogram_quantile(0.95, sum by (le) (cairn_search_duration_seconds_bucket{leg="total"}))')[0]["value"][1])
        assert 0 < p95 < 30
        pids = {path.name.split("_")[-1] for path in metrics_dir.glob("counter_*.db")}
        assert len(pids) >= 2, pids  # both worker processes wrote counts (and the sum above is theirs)

        _wait_value(base, 'sum(cairn_ask_duration_seconds_count{mode="sync"})', 1)
        _wait_value(base, "sum(cairn_generation_tokens_total) > bool 0", 1)

        # And every Grafana panel's query returns data (but for what this shape cannot have)
        time.sleep(3)
        for dashboard in sorted((DEPLOY / "grafana" / "dashboards").glob("*.json")):
            for panel in json.loads(dashboard.read_text())["panels"]:
                for target in panel["targets"]:
                    result = _query(base, target["expr"])
                    if panel["title"] not in NO_DATA_HERE:
                        assert result, (dashboard.name, panel["title"], target["expr"])
    finally:
        prometheus.stop()
