"""Builders shared by every dashboard: datasource, units, queries, panels.

Each dashboard module calls these so that every panel and target names the
same Prometheus datasource, every panel has a unit, and every dashboard
carries the fault windows as annotations.
"""

from __future__ import annotations

from collections.abc import Sequence

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as dashboard_builders
from grafana_foundation_sdk.builders import prometheus, timeseries
from grafana_foundation_sdk.models import common as common_models
from grafana_foundation_sdk.models import dashboard as dashboard_models

# The uid that the stack's Grafana provisioning gives its Prometheus
# datasource, so the generated JSON needs no datasource variable.
DATASOURCE_UID = "slot-harness-prometheus"
DATASOURCE = dashboard_models.DataSourceRef(type_val="prometheus", uid=DATASOURCE_UID)

# Grafana unit ids, as its field config names them.
SECONDS = "s"
OPS_PER_SECOND = "ops"
PERCENT_UNIT = "percentunit"
SHORT = "short"

# Coordinator series carry instance="c1", "c2" and so on, but harness series
# do not, so only coordinator queries use this matcher.
INSTANCE_MATCHER = 'instance=~"$instance"'

TAG = "slot-harness"
PANEL_WIDTH = 12
PANEL_HEIGHT = 8


def query(expr: str, legend: str, ref_id: str = "A") -> prometheus.Dataquery:
    """Build a range query on the project's Prometheus datasource."""
    return (
        prometheus.Dataquery()
        .expr(expr)
        .legend_format(legend)
        .ref_id(ref_id)
        .range()
        .datasource(DATASOURCE)
    )


def histogram_quantile(quantile: float, metric: str, matchers: str) -> str:
    """Return the PromQL for one quantile of a histogram, all series merged.

    `metric` is the histogram's name without `_bucket`, and `matchers` is the
    text between the braces.
    """
    return (
        f"histogram_quantile({quantile}, sum by (le) "
        f"(rate({metric}_bucket{{{matchers}}}[$__rate_interval])))"
    )


def latency_queries(metric: str, matchers: str) -> list[prometheus.Dataquery]:
    """Build the p50, p95 and p99 queries of one histogram."""
    quantiles = [("A", 0.5, "p50"), ("B", 0.95, "p95"), ("C", 0.99, "p99")]
    return [
        query(histogram_quantile(quantile, metric, matchers), legend, ref_id)
        for ref_id, quantile, legend in quantiles
    ]


def timeseries_panel(
    title: str,
    description: str,
    unit: str,
    targets: Sequence[prometheus.Dataquery],
) -> timeseries.Panel:
    """Build a time series panel on the project's datasource."""
    return (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .targets(list(targets))
        .span(PANEL_WIDTH)
        .height(PANEL_HEIGHT)
        .legend(
            common_builders.VizLegendOptions()
            .show_legend(True)
            .display_mode(common_models.LegendDisplayMode.LIST)
            .placement(common_models.LegendPlacement.BOTTOM)
        )
        .tooltip(
            common_builders.VizTooltipOptions()
            .mode(common_models.TooltipDisplayMode.MULTI)
            .sort(common_models.SortOrder.DESCENDING)
        )
    )


def with_target_line(panel: timeseries.Panel, target_seconds: float) -> None:
    """Draw a red threshold line at a latency target on `panel`."""
    panel.thresholds(
        dashboard_builders.ThresholdsConfig()
        .mode(dashboard_models.ThresholdsMode.ABSOLUTE)
        .steps(
            [
                dashboard_models.Threshold(value=None, color="green"),
                dashboard_models.Threshold(value=target_seconds, color="red"),
            ]
        )
    ).thresholds_style(
        common_builders.GraphThresholdsStyleConfig().mode(
            common_models.GraphThresholdsStyleMode.DASHED
        )
    )


class PrometheusAnnotationQuery(dashboard_models.AnnotationQuery):
    """An annotation query with the Prometheus fields the SDK's model lacks.

    Grafana's Prometheus plugin (its annotations.ts) reads `titleFormat`,
    `tagKeys` and `textFormat` from the annotation's top level, and moves a
    top-level `expr` and `step` into the query target when it loads the
    dashboard.
    """

    def __init__(self, title_format: str, tag_keys: str, text_format: str, step: str):
        super().__init__()
        self.title_format = title_format
        self.tag_keys = tag_keys
        self.text_format = text_format
        self.step = step

    def to_json(self) -> dict[str, object]:
        payload = super().to_json()
        payload["titleFormat"] = self.title_format
        payload["tagKeys"] = self.tag_keys
        payload["textFormat"] = self.text_format
        payload["step"] = self.step
        return payload


class FaultWindowAnnotation(dashboard_builders.AnnotationQuery):
    """Builder of the annotation that shades each open fault window."""

    _internal: PrometheusAnnotationQuery

    def __init__(self) -> None:
        # A fault window lasts seconds, so the query samples every 5 s. A step
        # picked from a wide time range could fall between windows.
        # NOTE: Prometheus samples the gauge only at scrape time, so a window
        # shorter than the scrape interval may not show at all.
        self._internal = PrometheusAnnotationQuery(
            title_format="fault {{kind}}",
            tag_keys="kind",
            text_format="fault window open: {{kind}}",
            step="5s",
        )
        self.name("Fault windows").datasource(DATASOURCE).enable(True).hide(False)
        self.icon_color("red").expr("harness_fault_active > 0")

    def build(self) -> PrometheusAnnotationQuery:
        return self._internal


def instance_variable() -> dashboard_builders.QueryVariable:
    """Build the `instance` variable: every coordinator, all selected by default."""
    return (
        dashboard_builders.QueryVariable("instance")
        .label("Coordinator")
        .description("Coordinator instances (c1, c2, ...) whose series to show.")
        .datasource(DATASOURCE)
        .query("label_values(coordinator_info, instance)")
        .refresh(dashboard_models.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dashboard_models.VariableSort.NATURAL_ASC)
        .multi(True)
        .include_all(True)
        # Without it "All" expands to a list of the values seen at load time,
        # which leaves out an instance that starts later.
        .all_value(".*")
        .current(
            dashboard_models.VariableOption(selected=True, text="All", value="$__all")
        )
    )


def build_dashboard(
    uid: str,
    title: str,
    description: str,
    panels: Sequence[timeseries.Panel],
    variables: Sequence[dashboard_builders.QueryVariable] = (),
) -> dashboard_models.Dashboard:
    """Build a dashboard of `panels`, two a row, with ids 1, 2, ... in order."""
    builder = (
        dashboard_builders.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags([TAG])
        .time("now-15m", "now")
        .refresh("10s")
        .tooltip(dashboard_models.DashboardCursorSync.CROSSHAIR)
        .annotation(FaultWindowAnnotation())
        .link(
            dashboard_builders.DashboardLink("Slot harness")
            .type(dashboard_models.DashboardLinkType.DASHBOARDS)
            .tags([TAG])
            .as_dropdown(True)
            .keep_time(True)
            .include_vars(True)
        )
    )
    for variable in variables:
        builder.with_variable(variable)
    for panel_id, panel in enumerate(panels, start=1):
        builder.with_panel(panel.id(panel_id))
    return builder.build()
