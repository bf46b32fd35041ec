"""Starting and stopping clusters; the Docker backend is the first."""

from harness.topology.docker_cluster import ClusterSpec, DockerCluster

__all__ = ["ClusterSpec", "DockerCluster"]
