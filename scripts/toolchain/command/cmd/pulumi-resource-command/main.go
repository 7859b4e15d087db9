// pulumi-resource-command for pg-cluster: command:local:Command only.
package main

import (
	"context"
	"fmt"
	"os"

	p "github.com/pulumi/pulumi-go-provider"
	"github.com/pulumi/pulumi-go-provider/infer"

	"example.invalid/pg-cluster-toolchain/command-provider/pkg/local"
)

// Version is stamped with -ldflags -X; it must equal the npm SDK's version.
var Version = "1.2.1"

func main() {
	prov, err := infer.NewProviderBuilder().
		WithNamespace("pulumi").
		WithDisplayName("Command").
		WithDescription("Run local commands (pg-cluster's subset of pulumi-command).").
		WithResources(infer.Resource(&local.Command{})).
		Build()
	if err == nil {
		err = p.RunProvider(context.Background(), "command", Version, prov)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "error: %s\n", err)
		os.Exit(1)
	}
}
