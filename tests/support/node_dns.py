"""Cluster DNS for the one-node cluster: a record per Service, for dnsmasq."""

from __future__ import annotations

import threading
from pathlib import Path

from .kube_apiserver import KubeAPIServer
from .node_config import CLUSTER_DOMAIN

__all__ = ["ServiceRecords"]

_SERVICE_POLL_S = 0.5


class ServiceRecords(threading.Thread):
    """Cluster DNS's data: every Service's ClusterIP, written as a hosts file for dnsmasq.

    The chart reaches its Redis and the sidecars their upstream by Service name, as in
    any cluster; this is the smallest DNS that makes those names resolve: dnsmasq
    (no upstream servers, so nothing is forwarded anywhere) re-reads the file when it
    changes, and this thread rewrites it when the Services change.
    """

    def __init__(self, api: KubeAPIServer, hosts_file: Path) -> None:
        super().__init__(name="cluster-dns-records", daemon=True)
        self._api, self._hosts_file = api, hosts_file
        self._stopped = threading.Event()

    def stop(self) -> None:
        self._stopped.set()
        self.join(timeout=10)

    def records(self) -> str | None:
        """The hosts file for the Services now, or None when the API did not answer."""
        try:
            status, body = self._api.request("GET", "/api/v1/services", timeout=5)
        except OSError:
            return None
        if status != 200 or not isinstance(body, dict):
            return None
        lines = []
        for service in body.get("items", []):
            address = service.get("spec", {}).get("clusterIP")
            if not address or address == "None":
                continue
            name, namespace = service["metadata"]["name"], service["metadata"]["namespace"]
            fqdn = f"{name}.{namespace}.svc"
            lines.append(f"{address} {fqdn}.{CLUSTER_DOMAIN} {fqdn}")
        return "".join(f"{line}\n" for line in sorted(lines))

    def run(self) -> None:
        written = None
        while not self._stopped.is_set():
            records = self.records()
            if records is not None and records != written:
                self._hosts_file.write_text(records)
                written = records
            self._stopped.wait(_SERVICE_POLL_S)
