// pulumi-tfgen-docker writes the Pulumi schema for pulumi-resource-docker:
//   pulumi-tfgen-docker schema --out <dir>
package main

import (
	"github.com/pulumi/pulumi-terraform-bridge/v3/pkg/tfgen"

	"example.invalid/pg-cluster-toolchain/docker-provider/pkg/dockerinfo"
)

func main() {
	tfgen.Main("docker", dockerinfo.Version, dockerinfo.Provider())
}
