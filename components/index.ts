/**
 * The pg-cluster package: `import { PostgresCluster } from "pg-cluster"`. Only PostgresCluster is
 * exported as a class among the components: a Pulumi component package offers every exported
 * ComponentResource, and the nodes, slots and post-step are its parts, not products of their own
 * (their types are exported for the cluster's escape hatches).
 */
export { PostgresCluster, nodeSlotName } from "./postgresCluster";
export type { ClusterNode, PostgresClusterOptions } from "./postgresCluster";
export {
  ClusterConfigError,
  DEFAULTS,
  PGADMIN_DEFAULTS,
  MAX_CLUSTER_NAME_LENGTH,
  MAX_REPLICAS,
  RELOADABLE_SETTINGS,
  clusterNodeNames,
  replicationCapacity,
  validateClusterArgs,
} from "./settings";
export type {
  BackupArgs,
  BackupSettings,
  ClusterSettings,
  ConfigProblem,
  PgAdminArgs,
  PgAdminSettings,
  PostgresClusterArgs,
  RestoreArgs,
  RestoreSettings,
} from "./settings";
export type { PgAdmin } from "./pgAdmin";
export type { Backup, BackupResult } from "./backup";
export type { BackupRepository } from "./backupRepository";
export { clusterArgsFromConfig, stackConfigReader } from "./stackConfig";
export type { ConfigReader } from "./stackConfig";
export type {
  ArchiverReport,
  PrimaryReport,
  ReplicaReport,
  ReplicationReport,
  RouterReport,
} from "./replicationCheck";
export type { Router } from "./router";
export type { ReplicationCheck } from "./replicationCheck";
export type { Topology, TopologyResult } from "./topology";
export type { RollGate, RollGateResult } from "./rollGate";
export type { HostStep, HostStepArgs } from "./hostStep";
export type { VersionCheck, VersionGuard } from "./versionGuard";
export type { PostgresNode } from "./postgresNode";
export type { ReplicationSlot } from "./replicationSlot";
