// pulumi-resource-docker for pg-cluster: the Terraform docker provider served through the
// Pulumi Terraform bridge. The schema is generated at build time by pulumi-tfgen-docker.
package main

import (
	_ "embed"

	"github.com/pulumi/pulumi-terraform-bridge/v3/pkg/tfbridge"

	"example.invalid/pg-cluster-toolchain/docker-provider/pkg/dockerinfo"
)

//go:embed schema.json
var pulumiSchema []byte

func main() {
	tfbridge.Main("docker", dockerinfo.Version, dockerinfo.Provider(), pulumiSchema)
}
