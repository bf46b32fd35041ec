"""Labels every container and network of the project carries, and teardown by label."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import docker
import docker.errors

PROJECT = "slot-harness"
LABEL_PROJECT = "slot-harness.project"
LABEL_RUN = "slot-harness.run-id"
LABEL_OWNER = "slot-harness.owner-pid"
LABEL_ROLE = "slot-harness.role"

log = logging.getLogger(__name__)


def run_labels(run_id: str, role: str) -> dict[str, str]:
    return {
        LABEL_PROJECT: PROJECT,
        LABEL_RUN: run_id,
        LABEL_OWNER: str(os.getpid()),
        LABEL_ROLE: role,
    }


def owner_alive(pid_text: str | None) -> bool:
    """Tells whether the process that owns a run still exists on this machine."""
    try:
        pid = int(pid_text or "")
    except ValueError:
        return False
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class Removed:
    containers: list[str]
    networks: list[str]
    skipped_live_runs: list[str]


def remove_run(client: docker.DockerClient, run_id: str) -> Removed:
    """Removes every container, then every network, labelled with ``run_id``."""
    return _remove(
        client, {"label": [f"{LABEL_PROJECT}={PROJECT}", f"{LABEL_RUN}={run_id}"]}
    )


def remove_orphans(client: docker.DockerClient, include_all: bool = False) -> Removed:
    """Removes resources of runs whose owner process is gone.

    With ``include_all`` it also removes project resources that belong to no run
    (such as a stack). Resources of a run whose owner is alive are never touched.
    """
    return _remove(client, {"label": [f"{LABEL_PROJECT}={PROJECT}"]}, include_all)


def _removable(labels: dict[str, str], include_all: bool) -> tuple[bool, str | None]:
    run_id = labels.get(LABEL_RUN)
    if run_id is None:
        return include_all, None
    if owner_alive(labels.get(LABEL_OWNER)) and labels.get(LABEL_OWNER) != str(
        os.getpid()
    ):
        return False, run_id
    return True, run_id


def _remove(
    client: docker.DockerClient, filters: dict, include_all: bool = True
) -> Removed:
    removed = Removed([], [], [])
    for container in client.containers.list(all=True, filters=filters):
        ok, run_id = _removable(container.labels, include_all)
        if not ok:
            if run_id and run_id not in removed.skipped_live_runs:
                removed.skipped_live_runs.append(run_id)
            continue
        try:
            container.remove(force=True, v=True)
            removed.containers.append(container.name)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as err:
            log.warning("could not remove container %s: %s", container.name, err)
    for network in client.networks.list(filters=filters):
        ok, _ = _removable(network.attrs.get("Labels") or {}, include_all)
        if not ok:
            continue
        try:
            network.remove()
            removed.networks.append(network.name)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as err:
            log.warning("could not remove network %s: %s", network.name, err)
    return removed
