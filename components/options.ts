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
