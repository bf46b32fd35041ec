"""Proxies between coordinator instances and their stores that inject faults.

``python -m harness.proxy.resp`` runs the RESP proxy, which makes WATCH
transactions abort by neutral writes to their watched keys.
"""

from harness.proxy.config import ProxyConfig, ProxyConfigError
from harness.proxy.server import ConnectionStats, ProxyServer, serve

__all__ = [
    "ConnectionStats",
    "ProxyConfig",
    "ProxyConfigError",
    "ProxyServer",
    "serve",
]
