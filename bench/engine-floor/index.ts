/**
 * The benchmark's engine floor: one Docker network and nothing else, through the same CLI, language
 * host and docker plugin as the real program. No cluster program can come up faster than this, so
 * it shows how much of an up belongs to the engine and the provider rather than to pg-cluster.
 */
import * as docker from "@pulumi/docker";
import * as pulumi from "@pulumi/pulumi";

const network = new docker.Network("floor-net", {
  name: `pg-cluster-floor-${pulumi.getStack()}`,
  driver: "bridge",
});

export const networkId = network.id;
