// Command kube-scheduler is the upstream kube-scheduler, built from the
// k8s.io/kubernetes module pinned in ../../go.mod (a copy of
// k8s.io/kubernetes/cmd/kube-scheduler/scheduler.go). The cluster test bed runs
// it so that Pods get bound to the one node.
package main

import (
	"os"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register" // for JSON log format registration
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version" // for version metric registration
	"k8s.io/kubernetes/cmd/kube-scheduler/app"
)

func main() {
	command := app.NewSchedulerCommand()
	code := cli.Run(command)
	os.Exit(code)
}
