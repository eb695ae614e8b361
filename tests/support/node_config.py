"""The one-node cluster's configuration files, as pure writers into its work directory.

Every address the cluster uses is here: the node's (on a bridge with no ports), the
Pods' bridge, the Services' range, and the API server's port inside the namespace.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from .cluster_images import ClusterImages
from .kube_apiserver import _openssl

__all__ = [
    "ADMIN_USER",
    "API_PORT",
    "CLUSTER_DOMAIN",
    "CNI_BIN",
    "KUBERNETES_ENDPOINTS",
    "NODE_IP",
    "NODE_NAME",
    "POD_CIDR",
    "SERVICE_CIDR",
    "containerd_config",
    "kube_proxy_config",
    "kubeconfig",
    "kubelet_config",
    "serving_certificate",
]

NODE_NAME = "llmquota-node"
NODE_IP = "10.77.0.1"
POD_CIDR = "10.88.0.0/16"
_POD_GATEWAY = "10.88.0.1"
SERVICE_CIDR = "10.96.0.0/16"
_KUBERNETES_SERVICE_IP = "10.96.0.1"
API_PORT = 6443
CLUSTER_DOMAIN = "cluster.local"
ADMIN_USER = "llmquota-admin"
CNI_BIN = Path("/usr/lib/cni")


def kubeconfig(path: Path, server: str, ca_file: Path, token: str) -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "llmquota-cluster",
                "cluster": {
                    "server": server,
                    "certificate-authority": str(ca_file),
                },
            }
        ],
        "users": [{"name": ADMIN_USER, "user": {"token": token}}],
        "contexts": [
            {
                "name": "llmquota-cluster",
                "context": {
                    "cluster": "llmquota-cluster",
                    "user": ADMIN_USER,
                    "namespace": "default",
                },
            }
        ],
        "current-context": "llmquota-cluster",
    }
    path.write_text(json.dumps(config, indent=2))
    path.chmod(0o600)


def serving_certificate(workdir: Path) -> tuple[Path, Path]:
    """A self-signed certificate for the API server, its own CA: (certificate, key).

    The server's own would not name 127.0.0.1, where the host reaches it (the relay);
    this one names every address the server is called at, inside and outside.
    """
    certificate, key = workdir / "apiserver.crt", workdir / "apiserver.key"
    names = ",".join(
        [f"IP:{address}" for address in ("127.0.0.1", NODE_IP, _KUBERNETES_SERVICE_IP)]
        + [f"DNS:{name}" for name in ("localhost", "kubernetes", "kubernetes.default",
                                      "kubernetes.default.svc")]
    )  # fmt: skip
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-subj", "/CN=llmquota-test-apiserver", "-keyout", str(key), "-out", str(certificate),
        "-addext", f"subjectAltName={names}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,digitalSignature,keyEncipherment,keyCertSign",
        "-addext", "extendedKeyUsage=serverAuth",
    )  # fmt: skip
    return certificate, key


def containerd_config(workdir: Path, images: ClusterImages) -> Path:
    cri = '[plugins."io.containerd.grpc.v1.cri"'
    config = textwrap.dedent(
        f"""\
        version = 2
        root = "{workdir}/containerd/root"
        state = "{workdir}/containerd/state"
        disabled_plugins = ["io.containerd.snapshotter.v1.btrfs",
          "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
          "io.containerd.snapshotter.v1.aufs",
          "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
        [grpc]
          address = "{workdir}/containerd.sock"
        [plugins."io.containerd.internal.v1.opt"]
          path = "{workdir}/containerd/opt"
        {cri}]
          sandbox_image = "{images.pause}"
          # The machine withholds CAP_SYS_RESOURCE: without this runc fails every sandbox
          # ("can't get final child's PID from pipe").
          restrict_oom_score_adj = true
          disable_apparmor = true
        {cri}.containerd]
          snapshotter = "overlayfs"
          default_runtime_name = "runc"
        {cri}.containerd.runtimes.runc]
          runtime_type = "io.containerd.runc.v2"
        {cri}.containerd.runtimes.runc.options]
          SystemdCgroup = false
        {cri}.cni]
          bin_dir = "{CNI_BIN}"
          conf_dir = "{workdir}/cni"
        """
    )
    (workdir / "cni").mkdir()
    (workdir / "cni" / "10-llmquota.conflist").write_text(
        json.dumps(
            {
                "cniVersion": "0.4.0",
                "name": "llmquota",
                "plugins": [
                    {
                        "type": "bridge",
                        "bridge": "cni0",
                        "isGateway": True,
                        "hairpinMode": True,
                        "ipam": {
                            "type": "host-local",
                            "ranges": [[{"subnet": POD_CIDR, "gateway": _POD_GATEWAY}]],
                            "routes": [{"dst": "0.0.0.0/0"}],
                        },
                    }
                ],
            }
        )
    )
    path = workdir / "containerd.toml"
    path.write_text(config)
    return path


def kubelet_config(workdir: Path, cgroup_root: str) -> Path:
    config = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        # A cgroup v1 host: kubelet 1.37 refuses it unless told not to.
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": f"/{cgroup_root}",
        "containerRuntimeEndpoint": f"unix://{workdir}/containerd.sock",
        "failSwapOn": False,
        "address": NODE_IP,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": 10248,
        "authentication": {"anonymous": {"enabled": True}, "webhook": {"enabled": False}},
        "authorization": {"mode": "AlwaysAllow"},
        # No registry: images are imported, and must never be collected.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "serializeImagePulls": False,
        # The development machine's disk is often fuller than the default thresholds.
        "evictionHard": {
            "memory.available": "1Mi",
            "nodefs.available": "0%",
            "nodefs.inodesFree": "0%",
            "imagefs.available": "0%",
        },
        # Cluster DNS: dnsmasq on the node's address, with a record per Service.
        "clusterDNS": [NODE_IP],
        "clusterDomain": CLUSTER_DOMAIN,
        "resolvConf": "",
        "oomScoreAdj": 0,
        "nodeStatusUpdateFrequency": "4s",
        "syncFrequency": "10s",
        "maxPods": 40,
    }
    path = workdir / "kubelet.json"
    path.write_text(json.dumps(config, indent=2))
    return path


def kube_proxy_config(workdir: Path, kubeconfig: Path) -> Path:
    config = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "mode": "iptables",
        "hostnameOverride": NODE_NAME,
        "clusterCIDR": POD_CIDR,
        "healthzBindAddress": "127.0.0.1:10256",
        "metricsBindAddress": "127.0.0.1:10249",
        # A Pod reaching a Service on its own bridge: masquerade, so the answer returns.
        "iptables": {"masqueradeAll": True},
        # Conntrack limits are machine-wide settings: leave them alone.
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
        "oomScoreAdj": 0,
    }
    path = workdir / "kube-proxy.json"
    path.write_text(json.dumps(config, indent=2))
    return path


KUBERNETES_ENDPOINTS = {
    "apiVersion": "discovery.k8s.io/v1",
    "kind": "EndpointSlice",
    "metadata": {
        "name": "kubernetes",
        "namespace": "default",
        "labels": {
            "kubernetes.io/service-name": "kubernetes",
            "endpointslice.kubernetes.io/managed-by": "llmquota-testbed",
        },
    },
    "addressType": "IPv4",
    "endpoints": [{"addresses": [NODE_IP], "conditions": {"ready": True}}],
    "ports": [{"name": "https", "port": API_PORT, "protocol": "TCP"}],
}
"""`--endpoint-reconciler-type=none` leaves the kubernetes Service without endpoints."""
