// Package dockerinfo maps the Terraform docker provider onto the tokens and property names of
// the @pulumi/docker npm SDK, so that SDK can drive it. Written for pg-cluster.
package dockerinfo

import (
	"github.com/pulumi/pulumi-terraform-bridge/v3/pkg/tfbridge"
	"github.com/pulumi/pulumi-terraform-bridge/v3/pkg/tfbridge/tokens"
	shimv2 "github.com/pulumi/pulumi-terraform-bridge/v3/pkg/tfshim/sdk-v2"

	"github.com/terraform-providers/terraform-provider-docker/shim"
)

// Version is stamped with -ldflags -X at build time; it must equal the npm SDK's version.
var Version = "5.2.0"

// Provider returns the bridge description of the provider.
func Provider() tfbridge.ProviderInfo {
	p := shimv2.NewProvider(shim.NewProvider())
	prov := tfbridge.ProviderInfo{
		P:           p,
		Name:        "docker",
		Version:     Version,
		Description: "A Pulumi package for interacting with Docker in Pulumi programs",
		License:     "Apache-2.0",
		GitHubOrg:   "kreuzwerker",
		Repository:  "https://github.com/pulumi/pulumi-docker",
		Config: map[string]*tfbridge.SchemaInfo{
			// DOCKER_HOST unset means the local daemon socket.
			"host": {Default: &tfbridge.DefaultInfo{
				EnvVars: []string{"DOCKER_HOST"},
				Value:   "unix:///var/run/docker.sock",
			}},
			"registry_auth": {Name: "registryAuth"},
		},
		Resources: map[string]*tfbridge.ResourceInfo{
			// Pulumi's own docker provider replaces containers delete-first (their names are unique).
			"docker_container": {
				Tok:                 "docker:index/container:Container",
				DeleteBeforeReplace: true,
				// The SDK keeps these two names as they are (no automatic plural).
				Fields: map[string]*tfbridge.SchemaInfo{
					"command":           {Name: "command"},
					"networks_advanced": {Name: "networksAdvanced"},
				},
			},
			"docker_network": {Tok: "docker:index/network:Network"},
			"docker_volume":  {Tok: "docker:index/volume:Volume"},
			// The SDK's Image is a native resource; the TF docker_image is the SDK's RemoteImage.
			"docker_image":          {Tok: "docker:index/remoteImage:RemoteImage"},
			"docker_registry_image": {Tok: "docker:index/registryImage:RegistryImage"},
			"docker_config":         {Tok: "docker:index/serviceConfig:ServiceConfig"},
			"docker_secret":         {Tok: "docker:index/secret:Secret"},
			"docker_service":        {Tok: "docker:index/service:Service"},
			"docker_plugin":         {Tok: "docker:index/plugin:Plugin"},
			"docker_tag":            {Tok: "docker:index/tag:Tag"},
			"docker_buildx_builder": {Tok: "docker:index/buildxBuilder:BuildxBuilder"},
		},
		DataSources: map[string]*tfbridge.DataSourceInfo{
			"docker_image": {Tok: "docker:index/getRemoteImage:getRemoteImage"},
		},
	}
	// Everything else (data sources) lands in the index module with standard names.
	prov.MustComputeTokens(tokens.SingleModule("docker_", "index", tokens.MakeStandard("docker")))
	// `name` is optional in the SDK: Pulumi picks <resource name>-<random> when it is unset.
	prov.SetAutonaming(255, "-")
	return prov
}
