import type * as docker from "@pulumi/docker";
import * as pulumi from "@pulumi/pulumi";

/**
 * The resources a component was told to depend on, for its own children. Pulumi does not record a
 * component's `dependsOn` on its children, and the engine orders deletes by recorded dependencies:
 * without this a replica's container could be deleted after its slot is dropped, or a slot drop
 * could race the primary's removal on `pulumi destroy`.
 */
export function inheritedDependsOn(
  opts: pulumi.ComponentResourceOptions | undefined,
): pulumi.Input<pulumi.Resource>[] {
  const deps = opts?.dependsOn;
  if (deps === undefined) return [];
  if (pulumi.Output.isInstance(deps)) {
    return [deps as pulumi.Input<pulumi.Resource>];
  }
  return Array.isArray(deps) ? [...deps] : [deps as pulumi.Input<pulumi.Resource>];
}

/**
 * The container arguments every container of a cluster shares: its name (also its host name and
 * alias on the cluster network), the cluster's label, its published ports (`[container, host]`
 * pairs) on `bindAddress` only, and a restart policy that survives a crash or an engine restart
 * but respects a `docker stop` by hand until the next `pulumi up`.
 */
export function clusterContainerArgs(args: {
  readonly containerName: string;
  readonly clusterName: string;
  readonly networkName: pulumi.Input<string>;
  readonly bindAddress: string;
  readonly ports: readonly (readonly [internal: number, external: number])[];
}): Pick<
  docker.ContainerArgs,
  "name" | "hostname" | "labels" | "networksAdvanced" | "ports" | "restart"
> {
  return {
    name: args.containerName,
    hostname: args.containerName,
    labels: [{ label: "pg-cluster.cluster", value: args.clusterName }],
    networksAdvanced: [{ name: args.networkName, aliases: [args.containerName] }],
    ports: args.ports.map(([internal, external]) => ({ internal, external, ip: args.bindAddress })),
    restart: "unless-stopped",
  };
}
