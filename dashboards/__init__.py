"""Grafana dashboards of the slot harness, written with grafana-foundation-sdk.

`harness dashboards build` writes them to `dashboards/json/<uid>.json`.
"""

from dashboards.render import BUILDERS, JSON_DIR, encode, render_all

__all__ = ["BUILDERS", "JSON_DIR", "encode", "render_all"]
