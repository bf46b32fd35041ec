import logging

import pytest

from harness.proxy import ProxyConfig, ProxyConfigError
from harness.proxy.logs import RateLimitedLogger


def test_config_from_env_defaults():
    config = ProxyConfig.from_env({"UPSTREAM_HOST": "redis"})
    assert config == ProxyConfig(
        upstream_host="redis",
        upstream_port=6379,
        listen_host="0.0.0.0",
        listen_port=6379,
        control_host="0.0.0.0",
        control_port=8080,
        watch_conflict_fraction=0.0,
        seed=0,
    )


def test_config_from_env_reads_every_variable():
    config = ProxyConfig.from_env(
        {
            "UPSTREAM_HOST": "10.0.0.5",
            "UPSTREAM_PORT": "6380",
            "LISTEN_HOST": "127.0.0.1",
            "LISTEN_PORT": "7000",
            "CONTROL_HOST": "127.0.0.1",
            "CONTROL_PORT": "0",
            "WATCH_CONFLICT_FRACTION": "0.25",
            "SEED": "-3",
        }
    )
    assert config.upstream_host == "10.0.0.5"
    assert config.upstream_port == 6380
    assert config.listen_host == "127.0.0.1"
    assert config.listen_port == 7000
    assert config.control_host == "127.0.0.1"
    assert config.control_port == 0
    assert config.watch_conflict_fraction == 0.25
    assert config.seed == -3


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        (
            {},
            "UPSTREAM_HOST is missing: set it to the host name or address of Redis",
        ),
        (
            {"UPSTREAM_HOST": "redis", "UPSTREAM_PORT": "redis"},
            "UPSTREAM_PORT is 'redis': expected an integer such as 6379",
        ),
        (
            {"UPSTREAM_HOST": "redis", "LISTEN_PORT": "70000"},
            "LISTEN_PORT is 70000: expected a TCP port from 1 to 65535, "
            "or 0 for a free port",
        ),
        (
            {"UPSTREAM_HOST": "redis", "WATCH_CONFLICT_FRACTION": "20%"},
            "WATCH_CONFLICT_FRACTION is '20%': expected a number from 0 to 1, "
            "such as 0.2",
        ),
        (
            {"UPSTREAM_HOST": "redis", "WATCH_CONFLICT_FRACTION": "nan"},
            "WATCH_CONFLICT_FRACTION is nan: expected a number from 0 to 1, "
            "such as 0.2",
        ),
        (
            {"UPSTREAM_HOST": "redis", "SEED": "0.5"},
            "SEED is '0.5': expected an integer such as 0",
        ),
    ],
)
def test_config_from_env_rejects_invalid_values(environ, message):
    with pytest.raises(ProxyConfigError) as raised:
        ProxyConfig.from_env(environ)
    assert str(raised.value) == message


def test_rate_limited_logger_counts_skipped_warnings(caplog):
    now = [100.0]
    warnings = RateLimitedLogger(
        logging.getLogger("test.proxy"), interval_s=10.0, clock=lambda: now[0]
    )
    with caplog.at_level(logging.WARNING, logger="test.proxy"):
        warnings.warning("upstream", "Redis at %s is down", "a:1")
        now[0] = 105.0
        warnings.warning("upstream", "Redis at %s is down", "a:1")
        warnings.warning("upstream", "Redis at %s is down", "a:1")
        warnings.warning("other", "another topic")
        now[0] = 111.0
        warnings.warning("upstream", "Redis at %s is down", "a:2")
    assert [record.getMessage() for record in caplog.records] == [
        "Redis at a:1 is down",
        "another topic",
        "Redis at a:2 is down (2 similar warnings skipped in the last 11 s)",
    ]
