// Package shim is copied by scripts/toolchain/build-providers.sh into a local copy of the
// kreuzwerker/terraform-provider-docker module (as <copy>/shim), because only code inside that
// module may import its internal/provider package. Written for pg-cluster; not upstream code.
package shim

import (
	"github.com/hashicorp/terraform-plugin-sdk/v2/helper/schema"
	"github.com/terraform-providers/terraform-provider-docker/internal/provider"
)

// NewProvider returns the SDKv2 half of the Terraform docker provider (containers, networks,
// volumes, images, ...). The plugin-framework half (compose, buildx build, containers data
// source) is left out on purpose.
func NewProvider() *schema.Provider { return provider.New("pg-cluster")() }
