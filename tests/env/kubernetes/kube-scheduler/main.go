// Command kube-scheduler is the upstream Kubernetes scheduler, built from the Go module
// proxy at the version pinned in ../../versions.env, so that Sigil's tests place pods on
// kwok's fake nodes and rollouts complete.
package main

import (
	"os"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	"k8s.io/kubernetes/cmd/kube-scheduler/app"
)

func main() {
	os.Exit(cli.Run(app.NewSchedulerCommand()))
}
