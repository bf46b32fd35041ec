"""promtool checks the Prometheus files the project ships and the ones it writes."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from harness.observe.prometheus import RULES_FILE, observe_config, replay_config

PROMTOOL = shutil.which("promtool")
ALERT_TESTS = Path(__file__).with_name("alerts_test.yml")

pytestmark = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool missing: install Debian's prometheus package (make does)",
)


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PROMTOOL, *args], capture_output=True, text=True, timeout=60, cwd=cwd
    )


def test_promtool_accepts_the_alert_rules():
    result = promtool("check", "rules", str(RULES_FILE))

    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 3 rules found" in result.stdout


def test_alert_rules_pass_their_unit_tests(tmp_path):
    shutil.copy2(RULES_FILE, tmp_path / "alerts.yml")
    shutil.copy2(ALERT_TESTS, tmp_path / "alerts_test.yml")

    result = promtool("test", "rules", "alerts_test.yml", cwd=tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_unit_tests_catch_a_loose_threshold(tmp_path):
    rules = RULES_FILE.read_text().replace(
        "(harness_online_violations_total) > 0", "(harness_online_violations_total) > 5"
    )
    assert rules != RULES_FILE.read_text()
    (tmp_path / "alerts.yml").write_text(rules)
    shutil.copy2(ALERT_TESTS, tmp_path / "alerts_test.yml")

    result = promtool("test", "rules", "alerts_test.yml", cwd=tmp_path)

    assert result.returncode == 1
    assert "alertname: DuplicateAssignment" in result.stdout + result.stderr


@pytest.mark.parametrize(
    "config", [observe_config(19191), replay_config()], ids=["observe", "replay"]
)
def test_promtool_accepts_the_configs_a_run_writes(tmp_path, config):
    # Inside the container the rules are under /etc. Here they are beside the config.
    config = {
        **config,
        "rule_files": [str(tmp_path / RULES_FILE.name)]
        if "rule_files" in config
        else [],
    }
    shutil.copy2(RULES_FILE, tmp_path / RULES_FILE.name)
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))

    result = promtool("check", "config", str(path))

    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_observe_config_scrapes_harness_and_coordinators():
    config = observe_config(19191)

    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["harness"]["static_configs"] == [
        {"targets": ["127.0.0.1:19191"], "labels": {"instance": "harness"}}
    ]
    assert jobs["coordinator"]["http_sd_configs"] == [
        {"url": "http://127.0.0.1:19191/targets", "refresh_interval": "1s"}
    ]
    assert config["global"]["scrape_interval"] == "1s"
