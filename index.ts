import * as pulumi from "@pulumi/pulumi";
import { PostgresCluster, clusterArgsFromConfig, stackConfigReader } from "./components";

// Named after project and stack, so two stacks on one Docker host never collide.
const name = `${pulumi.getProject()}-${pulumi.getStack()}`;
// Validate every config value and the name first: on bad input the program stops here, with
// every problem in one error, before any resource.
const { args } = clusterArgsFromConfig(stackConfigReader(), name);

const cluster = new PostgresCluster(name, args);

export const networkName = cluster.networkName;
export const nodes = cluster.nodes;
export const primaryEndpoint = cluster.primaryEndpoint;
export const replicaEndpoints = cluster.replicaEndpoints;
export const internalPrimaryEndpoint = cluster.internalPrimaryEndpoint;
export const internalReplicaEndpoints = cluster.internalReplicaEndpoints;
export const readWriteEndpoint = cluster.readWriteEndpoint;
export const readOnlyEndpoint = cluster.readOnlyEndpoint;
export const internalReadWriteEndpoint = cluster.internalReadWriteEndpoint;
export const internalReadOnlyEndpoint = cluster.internalReadOnlyEndpoint;
export const connectionString = cluster.connectionString;
export const readOnlyConnectionString = cluster.readOnlyConnectionString;
export const multiHostReadOnlyConnectionString = cluster.multiHostReadOnlyConnectionString;
export const replicationReport = cluster.replicationReport;
export const pgadminUrl = cluster.pgadminUrl;
export const caCertificate = cluster.caCertificate;
export const backup = cluster.backup;
