"""The Grafana dashboards: committed JSON, contract metric names, PromQL, CLI."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from dashboards import JSON_DIR, render_all
from harness.dashboards import app

ROOT = Path(__file__).resolve().parents[1]
COMMITTED_DIR = ROOT / "dashboards" / "json"
EXPECTED_FILES = [
    "slot-coordination.json",
    "slot-invariants.json",
    "slot-overview.json",
]
# The order in which `build` writes and `--check` reports the files.
BUILD_ORDER = ["slot-overview.json", "slot-coordination.json", "slot-invariants.json"]
DATASOURCE = {"type": "prometheus", "uid": "slot-harness-prometheus"}
UNITS = {"s", "ops", "percentunit", "short"}

# Every series name the metrics contract defines, histograms expanded to the
# series Prometheus stores. A dashboard may query these and nothing else.
CONTRACT_METRICS = {
    "coordinator_info",
    "coordinator_requests_total",
    "coordinator_assignment_seconds_bucket",
    "coordinator_assignment_seconds_sum",
    "coordinator_assignment_seconds_count",
    "coordinator_store_operation_seconds_bucket",
    "coordinator_store_operation_seconds_sum",
    "coordinator_store_operation_seconds_count",
    "coordinator_store_errors_total",
    "coordinator_exec_total",
    "coordinator_exec_aborts_total",
    "coordinator_watch_conflicts_total",
    "coordinator_retries_total",
    "coordinator_completions_emitted_total",
    "coordinator_batch_slots",
    "coordinator_batch_capacity",
    "coordinator_batch_completed",
    "harness_run_info",
    "harness_operations_total",
    "harness_operation_latency_seconds_bucket",
    "harness_operation_latency_seconds_sum",
    "harness_operation_latency_seconds_count",
    "harness_online_violations_total",
    "harness_faults_total",
    "harness_fault_active",
    "harness_fault_last_start_timestamp_seconds",
    "harness_fault_last_end_timestamp_seconds",
    "harness_batch_sent_timestamp_seconds",
    "harness_settle_seconds",
    "harness_settle_deadline_timestamp_seconds",
}

PROMQL_KEYWORDS = {
    "and",
    "bool",
    "by",
    "group_left",
    "group_right",
    "ignoring",
    "offset",
    "on",
    "or",
    "unless",
    "without",
}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_BRACES = re.compile(r"\{[^}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_FUNCTION_CALL = re.compile(r"\s*\(")


def metric_names(expr: str) -> set[str]:
    """Return the series names `expr` selects, leaving out functions and labels."""
    stripped = _STRING.sub(" ", expr)
    stripped = _BRACES.sub(" ", stripped)
    stripped = _RANGE.sub(" ", stripped)
    stripped = _GROUPING.sub(" ", stripped)
    names = set()
    for match in _IDENTIFIER.finditer(stripped):
        if _FUNCTION_CALL.match(stripped, match.end()):
            continue
        if match.group() not in PROMQL_KEYWORDS:
            names.add(match.group())
    return names


def load(name: str) -> dict:
    return json.loads((COMMITTED_DIR / name).read_text(encoding="utf-8"))


def all_exprs(dashboard: dict) -> list[str]:
    panel_exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    annotation_exprs = [a["expr"] for a in dashboard["annotations"]["list"]]
    return panel_exprs + annotation_exprs


def test_metric_names_skip_functions_and_labels():
    expr = (
        'histogram_quantile(0.99, sum by (le, store) (rate(foo_bucket{store="redis",'
        ' instance=~"$instance"}[$__rate_interval]))) / on (job) bar_total > 0'
    )

    assert metric_names(expr) == {"foo_bucket", "bar_total"}


def test_regenerated_json_equals_committed_files():
    rendered = render_all()

    assert sorted(rendered) == EXPECTED_FILES
    assert sorted(p.name for p in COMMITTED_DIR.glob("*.json")) == EXPECTED_FILES
    for name, text in rendered.items():
        assert (COMMITTED_DIR / name).read_text(encoding="utf-8") == text, name


def test_json_dir_is_the_committed_folder():
    assert JSON_DIR.resolve() == COMMITTED_DIR


def test_uids_are_unique_and_name_their_files():
    uids = [load(name)["uid"] for name in EXPECTED_FILES]

    assert uids == ["slot-coordination", "slot-invariants", "slot-overview"]
    assert len(set(uids)) == len(uids)


@pytest.mark.parametrize("name", EXPECTED_FILES)
def test_dashboard_header(name):
    dashboard = load(name)

    assert dashboard["schemaVersion"] == 41
    assert dashboard["tags"] == ["slot-harness"]
    panel_ids = [panel["id"] for panel in dashboard["panels"]]
    assert panel_ids == list(range(1, len(panel_ids) + 1))


@pytest.mark.parametrize("name", EXPECTED_FILES)
def test_panels_have_datasource_target_unit(name):
    for panel in load(name)["panels"]:
        title = panel["title"]
        assert panel["type"] == "timeseries", title
        assert panel["datasource"] == DATASOURCE, title
        assert panel["fieldConfig"]["defaults"]["unit"] in UNITS, title
        assert panel["targets"], title
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, title
            assert target["expr"].strip(), title


@pytest.mark.parametrize("name", EXPECTED_FILES)
def test_exprs_name_only_contract_metrics(name):
    for expr in all_exprs(load(name)):
        names = metric_names(expr)
        assert names, expr
        assert names <= CONTRACT_METRICS, (expr, sorted(names - CONTRACT_METRICS))


@pytest.mark.parametrize("name", EXPECTED_FILES)
def test_exprs_use_rate_interval_and_instance_only(name):
    dashboard = load(name)
    variables = [v["name"] for v in dashboard.get("templating", {}).get("list", [])]
    assert variables in ([], ["instance"])

    for expr in all_exprs(dashboard):
        assert set(_RANGE.findall(expr)) <= {"[$__rate_interval]"}, expr
        grafana_variables = set(re.findall(r"\$\w+", expr))
        assert grafana_variables <= {"$__rate_interval", "$instance"}, expr
        if "$instance" in expr:
            assert 'instance=~"$instance"' in expr, expr
            assert variables == ["instance"], expr


def test_instance_variable_lists_coordinators():
    variable = load("slot-overview.json")["templating"]["list"][0]

    assert variable["name"] == "instance"
    assert variable["type"] == "query"
    assert variable["query"] == "label_values(coordinator_info, instance)"
    assert variable["datasource"] == DATASOURCE
    assert variable["includeAll"] is True
    assert variable["allValue"] == ".*"


@pytest.mark.parametrize("name", EXPECTED_FILES)
def test_fault_window_annotation(name):
    annotations = load(name)["annotations"]["list"]

    assert len(annotations) == 1
    annotation = annotations[0]
    assert annotation["datasource"] == DATASOURCE
    assert annotation["expr"] == "harness_fault_active > 0"
    assert annotation["titleFormat"] == "fault {{kind}}"
    assert annotation["tagKeys"] == "kind"
    assert annotation["enable"] is True


@pytest.mark.parametrize(
    ("title", "metric", "store", "target_seconds"),
    [
        (
            "Coordination latency (target p99 < 1 s)",
            "coordinator_assignment_seconds_bucket",
            None,
            1.0,
        ),
        (
            "Redis store operations (target p99 < 100 ms)",
            "coordinator_store_operation_seconds_bucket",
            'store="redis"',
            0.1,
        ),
        (
            "Postgres store operations (target p99 < 200 ms)",
            "coordinator_store_operation_seconds_bucket",
            'store="postgres"',
            0.2,
        ),
    ],
)
def test_latency_panel_draws_its_target(title, metric, store, target_seconds):
    panels = {p["title"]: p for p in load("slot-overview.json")["panels"]}
    panel = panels[title]
    defaults = panel["fieldConfig"]["defaults"]

    assert defaults["unit"] == "s"
    steps = defaults["thresholds"]["steps"]
    assert steps == [
        {"color": "green", "value": None},
        {"color": "red", "value": target_seconds},
    ]
    assert defaults["custom"]["thresholdsStyle"]["mode"] == "dashed"
    legends = [t["legendFormat"] for t in panel["targets"]]
    assert legends == ["p50", "p95", "p99"]
    for target, quantile in zip(panel["targets"], ["0.5", "0.95", "0.99"], strict=True):
        assert target["expr"].startswith(f"histogram_quantile({quantile}, "), target
        assert metric_names(target["expr"]) == {metric}
        if store is not None:
            assert store in target["expr"]


def test_definite_answers_counts_ok_and_fail():
    panels = {p["title"]: p for p in load("slot-overview.json")["panels"]}
    panel = panels["Definite answers"]
    defaults = panel["fieldConfig"]["defaults"]

    assert "Success rate" not in panels
    assert defaults["unit"] == "percentunit"
    assert defaults["min"] == 0
    assert defaults["max"] == 1
    assert len(panel["targets"]) == 1
    assert panel["targets"][0]["expr"] == (
        'sum(rate(harness_operations_total{outcome=~"ok|fail"}[$__rate_interval]))'
        " / sum(rate(harness_operations_total[$__rate_interval]))"
    )
    assert panel["targets"][0]["legendFormat"] == "ok or fail"


def test_definite_answers_describes_outcomes():
    panels = {p["title"]: p for p in load("slot-overview.json")["panels"]}
    description = panels["Definite answers"]["description"]

    assert "ok: the coordinator replied 200 or 201." in description
    assert "fail: a definite refusal (400, 404, or 409" in description
    assert "info: an unknown outcome" in description


def _as_plain_promql(expr: str) -> str:
    # Prometheus does not know Grafana's variables, so these stand-ins keep the
    # expression's shape.
    return expr.replace("$__rate_interval", "1m").replace("$instance", ".*")


@pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool is not installed (Debian package prometheus)",
)
def test_exprs_parse_as_promql(tmp_path):
    exprs = [
        _as_plain_promql(expr)
        for name in EXPECTED_FILES
        for expr in all_exprs(load(name))
    ]
    # promtool parses the expression of each recording rule it checks.
    rules = [{"record": f"dashboard:expr_{i}", "expr": e} for i, e in enumerate(exprs)]
    rules_file = tmp_path / "rules.yml"
    rules_file.write_text(yaml.safe_dump({"groups": [{"name": "d", "rules": rules}]}))

    result = subprocess.run(
        ["promtool", "check", "rules", str(rules_file)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in result.stdout


@pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool is not installed (Debian package prometheus)",
)
def test_promtool_rejects_a_broken_expr(tmp_path):
    # Proves the parse check above can fail.
    rules = [
        {"record": "dashboard:broken", "expr": "sum(rate(harness_faults_total[1m])"}
    ]
    rules_file = tmp_path / "rules.yml"
    rules_file.write_text(yaml.safe_dump({"groups": [{"name": "d", "rules": rules}]}))

    result = subprocess.run(
        ["promtool", "check", "rules", str(rules_file)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 1
    assert "parse error" in result.stdout + result.stderr


runner = CliRunner()


def test_build_writes_every_file(tmp_path):
    out = tmp_path / "json"

    result = runner.invoke(app, ["build", "--out", str(out)])

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [f"wrote {out / n}" for n in BUILD_ORDER]
    for name in EXPECTED_FILES:
        assert (out / name).read_text(encoding="utf-8") == render_all()[name]


def test_check_passes_on_fresh_build(tmp_path):
    runner.invoke(app, ["build", "--out", str(tmp_path)])

    result = runner.invoke(app, ["build", "--out", str(tmp_path), "--check"])

    assert result.exit_code == 0, result.output
    assert result.stdout == f"3 dashboard files in {tmp_path} are up to date.\n"


def test_check_passes_on_committed_files():
    result = runner.invoke(app, ["build", "--check"])

    assert result.exit_code == 0, result.output


def test_check_lists_outdated_files(tmp_path):
    runner.invoke(app, ["build", "--out", str(tmp_path)])
    (tmp_path / "slot-overview.json").write_text("{}\n", encoding="utf-8")
    (tmp_path / "slot-invariants.json").unlink()
    (tmp_path / "old.json").write_text("{}\n", encoding="utf-8")
    before = sorted(p.name for p in tmp_path.iterdir())

    result = runner.invoke(app, ["build", "--out", str(tmp_path), "--check"])

    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"differs: {tmp_path / 'slot-overview.json'}",
        f"missing: {tmp_path / 'slot-invariants.json'}",
        f"stale: {tmp_path / 'old.json'} (no dashboard module builds it). Delete "
        "the file, because `harness dashboards build` does not remove files.",
        "3 dashboard file(s) need changes: 2 out of date (missing or differs), 1 "
        f"stale. Run `harness dashboards build --out {tmp_path}` to rewrite the "
        "out-of-date file(s), and delete the stale file(s).",
    ]
    # --check writes nothing.
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_check_on_missing_folder(tmp_path):
    out = tmp_path / "absent"

    result = runner.invoke(app, ["build", "--out", str(out), "--check"])

    assert result.exit_code == 1
    missing = [
        line for line in result.stderr.splitlines() if line.startswith("missing")
    ]
    assert missing == [f"missing: {out / n}" for n in BUILD_ORDER]
    assert not out.exists()


def test_build_rejects_a_file_as_out(tmp_path):
    out = tmp_path / "file.json"
    out.write_text("", encoding="utf-8")

    result = runner.invoke(app, ["build", "--out", str(out)])

    assert result.exit_code == 2
    assert f"--out {out} is a file" in result.stderr


def test_check_says_to_delete_stale_file(tmp_path):
    runner.invoke(app, ["build", "--out", str(tmp_path)])
    (tmp_path / "old.json").write_text("{}\n", encoding="utf-8")

    result = runner.invoke(app, ["build", "--out", str(tmp_path), "--check"])

    assert result.exit_code == 1
    # `build` would leave old.json in place, so the output does not suggest it.
    assert result.stderr.splitlines() == [
        f"stale: {tmp_path / 'old.json'} (no dashboard module builds it). Delete "
        "the file, because `harness dashboards build` does not remove files.",
        "1 dashboard file(s) need changes: 0 out of date (missing or differs), 1 "
        "stale. Delete the stale file(s).",
    ]
    assert result.stdout == ""


def test_check_reports_non_utf8_file_as_differing(tmp_path):
    runner.invoke(app, ["build", "--out", str(tmp_path)])
    (tmp_path / "slot-coordination.json").write_bytes(b'{"title": "\xff\xfe"}\n')

    result = runner.invoke(app, ["build", "--out", str(tmp_path), "--check"])

    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.stderr.splitlines() == [
        f"differs: {tmp_path / 'slot-coordination.json'}",
        "1 dashboard file(s) need changes: 1 out of date (missing or differs), 0 "
        f"stale. Run `harness dashboards build --out {tmp_path}` to rewrite the "
        "out-of-date file(s).",
    ]


def test_check_outside_repository_says_no_commit(tmp_path):
    (tmp_path / "slot-overview.json").write_text("{}\n", encoding="utf-8")

    result = runner.invoke(app, ["build", "--out", str(tmp_path), "--check"])

    assert result.exit_code == 1
    summary = result.stderr.splitlines()[-1]
    assert summary == (
        "3 dashboard file(s) need changes: 3 out of date (missing or differs), 0 "
        f"stale. Run `harness dashboards build --out {tmp_path}` to rewrite the "
        "out-of-date file(s)."
    )
    assert "commit" not in result.stderr


@pytest.mark.parametrize("explicit_out", [False, True], ids=["default", "explicit"])
def test_check_of_package_folder_says_commit(shadow_dashboards, explicit_out):
    # The copy has no json/ folder, so every file of its default folder is
    # missing.
    json_dir = shadow_dashboards / "json"
    args = ["build", "--check"] + (["--out", str(json_dir)] if explicit_out else [])

    result = runner.invoke(app, args)

    assert result.exit_code == 1, result.output
    assert result.stderr.splitlines() == [
        *[f"missing: {json_dir / name}" for name in BUILD_ORDER],
        "3 dashboard file(s) need changes: 3 out of date (missing or differs), 0 "
        "stale. Run `harness dashboards build` to rewrite the out-of-date file(s) "
        "and commit the result.",
    ]


def test_build_replaces_symlink_not_target(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    target = tmp_path / "outside.txt"
    target.write_text("keep me\n", encoding="utf-8")
    link = out / "slot-overview.json"
    link.symlink_to(target)

    result = runner.invoke(app, ["build", "--out", str(out)])

    assert result.exit_code == 0, result.output
    assert target.read_text(encoding="utf-8") == "keep me\n"
    assert not link.is_symlink()
    assert link.read_text(encoding="utf-8") == render_all()["slot-overview.json"]


def test_build_overwrites_and_leaves_no_temporary_file(tmp_path):
    runner.invoke(app, ["build", "--out", str(tmp_path)])
    (tmp_path / "slot-invariants.json").write_bytes(b"\xff old\n")

    result = runner.invoke(app, ["build", "--out", str(tmp_path)])

    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == EXPECTED_FILES
    for name in EXPECTED_FILES:
        assert (tmp_path / name).read_text(encoding="utf-8") == render_all()[name]


def test_failed_write_removes_temporary_file(tmp_path):
    # A folder in the place of a file makes the rename fail, even for root.
    (tmp_path / "slot-overview.json").mkdir()

    result = runner.invoke(app, ["build", "--out", str(tmp_path)])

    assert result.exit_code == 2, result.output
    assert result.stderr == (
        f"error: cannot write {tmp_path / 'slot-overview.json'}: Is a directory. "
        "Pass a writable folder with --out.\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["slot-overview.json"]
    assert (tmp_path / "slot-overview.json").is_dir()


@pytest.fixture
def shadow_dashboards(tmp_path, monkeypatch):
    """Copy the dashboards package to tmp_path and import the copy in its place."""
    shadow = tmp_path / "shadow"
    package = shadow / "dashboards"
    shutil.copytree(
        ROOT / "dashboards",
        package,
        ignore=shutil.ignore_patterns("__pycache__", "json"),
    )
    # Without the real modules in sys.modules, the next import searches sys.path,
    # where the copy now comes first. monkeypatch restores the real modules.
    for name in _dashboards_module_names():
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.syspath_prepend(str(shadow))
    yield package
    # Remove the copy's modules, so that monkeypatch's restore leaves only the real
    # ones. Without this, a module that only the copy has would stay imported.
    for name in _dashboards_module_names():
        del sys.modules[name]


def _dashboards_module_names() -> list[str]:
    return [
        name
        for name in sys.modules
        if name == "dashboards" or name.startswith("dashboards.")
    ]


def _json_dumps_line(package: Path) -> int:
    lines = (package / "render.py").read_text(encoding="utf-8").splitlines()
    return next(i for i, line in enumerate(lines, 1) if "json.dumps(" in line)


# Each case replaces overview.py of the copied package. The expected file is
# relative to the package. A line of None is the line where encode() calls
# json.dumps, because the json module raises there.
BROKEN_OVERVIEW_CASES = [
    pytest.param(
        'UID = "slot-overview"\n\n\ndef build(:\n    pass\n',
        "overview.py",
        4,
        "SyntaxError: invalid syntax",
        id="syntax-error",
    ),
    pytest.param(
        'UID = "slot-overview"\nraise RuntimeError("no overview")\n',
        "overview.py",
        2,
        "RuntimeError: no overview",
        id="import-raises",
    ),
    pytest.param(
        'import no_such_sdk_module\n\nUID = "slot-overview"\n',
        "overview.py",
        1,
        "ModuleNotFoundError: No module named 'no_such_sdk_module'",
        id="missing-module",
    ),
    pytest.param(
        'UID = "slot-overview"\n\n\ndef build():\n    return undefined_panel\n',
        "overview.py",
        5,
        "NameError: name 'undefined_panel' is not defined",
        id="build-raises",
    ),
    pytest.param(
        'UID = "slot-overview"\n\n\ndef build():\n    return object()\n',
        "render.py",
        None,
        "TypeError: Object of type object is not JSON serializable",
        id="encode-raises",
    ),
]


@pytest.mark.parametrize("check", [False, True], ids=["build", "check"])
@pytest.mark.parametrize(("source", "file", "line", "error"), BROKEN_OVERVIEW_CASES)
def test_broken_module_exits_2(
    shadow_dashboards, tmp_path, check, source, file, line, error
):
    (shadow_dashboards / "overview.py").write_text(source, encoding="utf-8")
    if line is None:
        line = _json_dumps_line(shadow_dashboards)
    out = tmp_path / "out"
    args = ["build", "--out", str(out)] + (["--check"] if check else [])

    result = runner.invoke(app, args)

    assert result.exit_code == 2, result.output
    assert result.stderr == (
        f"error: building the dashboards failed: {shadow_dashboards / file}:{line}: "
        f"{error}; fix the module\n"
    )
    assert result.stdout == ""
    assert not out.exists()


def test_broken_module_fails_default_check(shadow_dashboards):
    (shadow_dashboards / "__init__.py").write_text("def broken(:\n", encoding="utf-8")

    result = runner.invoke(app, ["build", "--check"])

    assert result.exit_code == 2, result.output
    assert result.stderr == (
        f"error: building the dashboards failed: {shadow_dashboards / '__init__.py'}"
        ":1: SyntaxError: invalid syntax; fix the module\n"
    )


def _run_harness(args: list[str], shadow: Path) -> subprocess.CompletedProcess:
    harness = Path(sys.executable).with_name("harness")
    assert harness.is_file(), f"no harness script beside {sys.executable}"
    # PYTHONPATH comes before site-packages and the editable install's finder,
    # so the broken copy is the `dashboards` package the command would import.
    paths = [str(shadow), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    return subprocess.run(
        [str(harness), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def test_cli_works_without_importable_dashboards(tmp_path):
    shadow = tmp_path / "shadow"
    (shadow / "dashboards").mkdir(parents=True)
    init = shadow / "dashboards" / "__init__.py"
    init.write_text("def broken(:\n", encoding="utf-8")

    top_help = _run_harness(["--help"], shadow)
    dashboards_help = _run_harness(["dashboards", "build", "--help"], shadow)
    check = _run_harness(["dashboards", "build", "--check"], shadow)

    assert top_help.returncode == 0, top_help.stderr
    assert "dashboards" in top_help.stdout
    assert dashboards_help.returncode == 0, dashboards_help.stderr
    assert "--check" in dashboards_help.stdout
    # The build itself does import the broken copy, which proves the copy
    # shadows the real package in these processes.
    assert check.returncode == 2, check.stdout + check.stderr
    assert check.stderr == (
        f"error: building the dashboards failed: {init}:1: SyntaxError: invalid "
        "syntax; fix the module\n"
    )
