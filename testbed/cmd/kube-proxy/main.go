// Command kube-proxy is the upstream kube-proxy, built from the k8s.io/kubernetes
// module pinned in ../../go.mod (a copy of k8s.io/kubernetes/cmd/kube-proxy/proxy.go).
// The cluster test bed runs it in iptables mode inside the node's network
// namespace, so that ClusterIP Services route.
package main

import (
	"os"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // for client metric registration
	_ "k8s.io/component-base/metrics/prometheus/version"  // for version metric registration
	"k8s.io/kubernetes/cmd/kube-proxy/app"
)

func main() {
	command := app.NewProxyCommand()
	code := cli.Run(command)
	os.Exit(code)
}
