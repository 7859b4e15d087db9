import * as pulumi from "@pulumi/pulumi";
import { PostgresCluster, clusterArgsFromConfig, stackConfigReader } from "./components";

// Validate every config value first: on bad input the program stops here, before any resource.
const { args } = clusterArgsFromConfig(stackConfigReader());

// Named after project and stack, so two stacks on one Docker host never collide.
const cluster = new PostgresCluster(`${pulumi.getProject()}-${pulumi.getStack()}`, args);

export const networkName = cluster.networkName;
export const primaryEndpoint = cluster.primaryEndpoint;
export const replicaEndpoints = cluster.replicaEndpoints;
export const internalPrimaryEndpoint = cluster.internalPrimaryEndpoint;
export const internalReplicaEndpoints = cluster.internalReplicaEndpoints;
export const connectionString = cluster.connectionString;
export const readOnlyConnectionString = cluster.readOnlyConnectionString;
export const replicationReport = cluster.replicationReport;
