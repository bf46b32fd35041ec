"""The time range of an observed run's saved data, from alerts.json."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from harness.errors import HarnessError
from harness.observe import observed_range, range_from_files, require_saved_data


def observed_folder(tmp_path: Path, saved: object) -> Path:
    run_dir = tmp_path / "run"
    data = run_dir / "prometheus" / "data"
    data.mkdir(parents=True)
    (run_dir / "alerts.json").write_text(json.dumps(saved))
    return run_dir


def test_finished_run_gives_its_saved_range(tmp_path):
    run_dir = observed_folder(
        tmp_path, {"observed_from": 100.5, "observed_to": 160.0, "alerts": []}
    )

    assert observed_range(run_dir) == (100.5, 160.0)


def test_interrupted_run_ends_at_newest_data_file(tmp_path):
    run_dir = observed_folder(
        tmp_path, {"observed_from": 100.0, "observed_to": None, "alerts": None}
    )
    wal = run_dir / "prometheus" / "data" / "wal" / "00000000"
    wal.parent.mkdir()
    wal.write_bytes(b"x")
    os.utime(wal, (150.0, 150.0))

    assert observed_range(run_dir) == (100.0, 150.0)


@pytest.mark.parametrize(
    ("saved", "detail"),
    [
        ([1, 2], "a JSON list, not an object"),
        ({"observed_to": 5}, "observed_from is not a unix time"),
        ({"observed_from": "soon", "observed_to": 5}, "observed_from is not"),
        ({"observed_from": 5, "observed_to": "later"}, "observed_to is not"),
        ({"observed_from": 5, "observed_to": True}, "observed_to is not"),
        ({"observed_from": 9, "observed_to": 5}, "observed_to 5.0 is before"),
    ],
)
def test_damaged_alerts_file_is_named(tmp_path, saved, detail):
    run_dir = observed_folder(tmp_path, saved)

    with pytest.raises(HarnessError) as caught:
        observed_range(run_dir)

    assert str(run_dir / "alerts.json") in str(caught.value)
    assert detail in str(caught.value)


def test_nan_in_alerts_file_is_rejected(tmp_path):
    run_dir = observed_folder(tmp_path, {})
    (run_dir / "alerts.json").write_text('{"observed_from": NaN, "observed_to": 5}')

    with pytest.raises(HarnessError, match="observed_from is not a unix time"):
        observed_range(run_dir)


def test_file_instead_of_run_folder_is_named(tmp_path):
    history = tmp_path / "history.jsonl"
    history.write_text("{}\n")

    with pytest.raises(HarnessError, match="is a file, not a run folder"):
        require_saved_data(history)


def test_run_without_prometheus_data_is_named(tmp_path):
    with pytest.raises(HarnessError, match="only runs made with"):
        require_saved_data(tmp_path)


def test_range_from_files_starts_at_history_start(tmp_path):
    run_dir = observed_folder(tmp_path, {})
    (run_dir / "history.jsonl").write_text(
        '{"format": "slot-harness-history", '
        '"started_at": "1970-01-01T00:01:40+00:00"}\n'
    )
    wal = run_dir / "prometheus" / "data" / "wal" / "00000000"
    wal.parent.mkdir()
    wal.write_bytes(b"x")
    os.utime(wal, (170.0, 170.0))

    assert range_from_files(run_dir) == (100.0, 170.0)


def test_range_from_files_without_history_uses_data_times(tmp_path):
    run_dir = observed_folder(tmp_path, {})
    data = run_dir / "prometheus" / "data"
    for name, mtime in (("a", 120.0), ("b", 180.0)):
        (data / name).write_bytes(b"x")
        os.utime(data / name, (mtime, mtime))

    assert range_from_files(run_dir) == (120.0, 180.0)


def test_range_from_files_needs_some_data(tmp_path):
    run_dir = observed_folder(tmp_path, {})

    with pytest.raises(HarnessError, match="contains no files"):
        range_from_files(run_dir)


def test_data_file_instead_of_folder_is_named(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "prometheus").mkdir(parents=True)
    (run_dir / "prometheus" / "data").write_text("not a folder")

    with pytest.raises(HarnessError, match="is a file, not Prometheus's data folder"):
        require_saved_data(run_dir)
