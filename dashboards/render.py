"""Encoding of the dashboards into the Grafana JSON files kept in the repository."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import Dashboard

from dashboards import coordination, invariants, overview

JSON_DIR = Path(__file__).parent / "json"

# Dashboard uid mapped to the function that builds it. The uid is also the
# file name's stem.
BUILDERS: dict[str, Callable[[], Dashboard]] = {
    overview.UID: overview.build,
    coordination.UID: coordination.build,
    invariants.UID: invariants.build,
}


def encode(dashboard: Dashboard) -> str:
    """Encode `dashboard` as Grafana JSON.

    Sorted keys, a two-space indent and a final newline make regeneration
    byte-identical, so a diff of the committed files shows only real changes.
    """
    return json.dumps(dashboard, cls=JSONEncoder, sort_keys=True, indent=2) + "\n"


def render_all() -> dict[str, str]:
    """Build every dashboard and return its file name mapped to its JSON text."""
    return {f"{uid}.json": encode(build()) for uid, build in BUILDERS.items()}
