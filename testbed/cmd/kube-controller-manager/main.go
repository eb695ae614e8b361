// Command kube-controller-manager is the upstream kube-controller-manager,
// built from the k8s.io/kubernetes module pinned in ../../go.mod (a copy of
// k8s.io/kubernetes/cmd/kube-controller-manager/controller-manager.go). The
// test bed runs it for garbage collection (ownerReferences), namespace deletion
// and service-account tokens.
package main

import (
	"os"
	_ "time/tzdata" // for CronJob Time Zone support

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"          // for JSON log format registration
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // load all the prometheus client-go plugin
	_ "k8s.io/component-base/metrics/prometheus/version"  // for version metric registration
	"k8s.io/kubernetes/cmd/kube-controller-manager/app"
)

func main() {
	command := app.NewControllerManagerCommand()
	code := cli.Run(command)
	os.Exit(code)
}
