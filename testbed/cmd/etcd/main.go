// Command etcd is the upstream etcd server, built from the
// go.etcd.io/etcd/server/v3 module pinned in ../../go.mod. `go install
// go.etcd.io/etcd/v3` does not work (its go.mod has replace directives), so we
// call etcdmain ourselves, as etcd's own main.go does.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
