// Command kubelet is the upstream kubelet, built from the k8s.io/kubernetes
// module pinned in ../../go.mod (a copy of k8s.io/kubernetes/cmd/kubelet/kubelet.go).
// The cluster test bed (tests/support/kube_node.py) runs it, fenced into a mount
// and network namespace of its own, against containerd: the node real Pods run on.
package main

import (
	"context"
	"os"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"          // for JSON log format registration
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // for client metric registration
	_ "k8s.io/component-base/metrics/prometheus/version"  // for version metric registration
	"k8s.io/kubernetes/cmd/kubelet/app"
)

func main() {
	command := app.NewKubeletCommand(context.Background())
	code := cli.Run(command)
	os.Exit(code)
}
