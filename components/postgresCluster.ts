import * as docker from "@pulumi/docker";
import * as pulumi from "@pulumi/pulumi";
import { CONTAINER_PORT } from "./assets";
import { inheritedDependsOn } from "./options";
import { PostgresNode } from "./postgresNode";
import { ReplicationCheck, ReplicationReport } from "./replicationCheck";
import { ReplicationSlot } from "./replicationSlot";
import {
  ClusterConfigError,
  ClusterSettings,
  PostgresClusterArgs,
  ProblemList,
  checkClusterName,
  checkPassword,
  validateClusterArgs,
} from "./settings";

/**
 * A PostgreSQL primary with N streaming read replicas on a Docker host: a private network, one
 * volume and container per node, one physical replication slot per replica, and a post-step that
 * seeds the `Wizards` table and proves every replica has replayed it.
 *
 * Replica containers are created as soon as the primary's container runs; each waits for the
 * primary to accept connections (no crash loop), clones it through its own slot, and is added or
 * removed without touching the primary or the other replicas. The post-step is what `pulumi up`
 * waits on: it finishes only when every replica has replayed a write made after the seed.
 */
export class PostgresCluster extends pulumi.ComponentResource {
  /** The cluster's Docker network. */
  public readonly network: docker.Network;

  /** Name of the Docker network. */
  public readonly networkName: pulumi.Output<string>;
  /** `host:port` of the primary, as published on the Docker host. */
  public readonly primaryEndpoint: pulumi.Output<string>;
  /** `host:port` of each replica, as published on the Docker host. */
  public readonly replicaEndpoints: pulumi.Output<string[]>;
  /**
   * `host:port` of the primary on the cluster's network (its container name and port 5432), for
   * containers attached to `networkName`.
   */
  public readonly internalPrimaryEndpoint: pulumi.Output<string>;
  /** `host:port` of each replica on the cluster's network, for containers attached to it. */
  public readonly internalReplicaEndpoints: pulumi.Output<string[]>;
  /** Read-write libpq URI (superuser, primary). Secret. */
  public readonly connectionString: pulumi.Output<string>;
  /**
   * Read-only libpq multi-host URI over the replicas (`target_session_attrs=standby`, libpq 14+;
   * `load_balance_hosts=random`, libpq 16+). With 0 replicas it points at the primary. Secret.
   */
  public readonly readOnlyConnectionString: pulumi.Output<string>;
  /** Per-replica state, slot and replay lag from the latest post-step. */
  public readonly replicationReport: pulumi.Output<ReplicationReport>;

  /** The primary node. */
  get primary(): PostgresNode {
    return partsOf(this).primary;
  }
  /** The replica nodes, in order (`replica-1` first). */
  get replicas(): readonly PostgresNode[] {
    return partsOf(this).replicas;
  }
  /** The slot lifetimes on the primary, one per replica. */
  get slots(): readonly ReplicationSlot[] {
    return partsOf(this).slots;
  }
  /** The post-step. */
  get check(): ReplicationCheck {
    return partsOf(this).check;
  }

  constructor(name: string, args: PostgresClusterArgs, opts?: pulumi.ComponentResourceOptions) {
    super("pg-cluster:index:PostgresCluster", name, {}, opts);
    const problems = new ProblemList();
    checkClusterName(problems, name);
    const s = validateClusterArgs(args, problems);
    const superuserPassword = resolvedPassword("superuserPassword", s.superuserPassword);
    const replicationPassword = resolvedPassword("replicationPassword", s.replicationPassword);
    const labels = [{ label: "pg-cluster.cluster", value: name }];
    // What the user said the cluster must follow: Pulumi records a component's dependsOn on the
    // component only, so every child records it too (and so is deleted before it).
    const userDeps = inheritedDependsOn(opts);
    const child = (...deps: pulumi.Input<pulumi.Resource>[]): pulumi.ComponentResourceOptions => ({
      parent: this,
      dependsOn: [...userDeps, ...deps],
    });

    this.network = new docker.Network(
      `${name}-net`,
      { name: `${name}-net`, driver: "bridge", labels },
      child(),
    );

    const nodeEnv = (
      extra: Record<string, string>,
      secrets: Record<string, pulumi.Output<string>>,
    ) =>
      pulumi
        .all(secrets)
        .apply((values) =>
          Object.entries({ ...sharedEnv(s), ...extra, ...values }).map(([k, v]) => `${k}=${v}`),
        );

    const primaryName = `${name}-primary`;
    const primary = new PostgresNode(
      primaryName,
      {
        role: "primary",
        nodeName: primaryName,
        clusterName: name,
        image: s.image,
        networkName: this.network.name,
        hostPort: s.primaryPort,
        bindAddress: s.bindAddress,
        envs: nodeEnv(
          { PGC_NODE_NAME: primaryName, PGC_DATABASE: s.database },
          {
            PGC_SUPERUSER_PASSWORD: superuserPassword,
            PGC_REPLICATION_PASSWORD: replicationPassword,
          },
        ),
      },
      child(),
    );

    const superuserEnv = {
      PGC_PRIMARY: JSON.stringify({ name: primaryName, host: s.host, port: s.primaryPort }),
      PGC_SUPERUSER: s.superuser,
      PGC_SUPERUSER_PASSWORD: superuserPassword,
      PGC_DATABASE: s.database,
    };

    const slots: ReplicationSlot[] = [];
    const replicas: PostgresNode[] = [];
    for (let n = 1; n <= s.replicas; n++) {
      const replicaName = `${name}-replica-${n}`;
      const slot = new ReplicationSlot(
        `${replicaName}-slot`,
        { slotName: slotName(n), environment: superuserEnv },
        // After the primary, before the replica: so on removal the replica goes first, then the slot.
        child(primary),
      );
      slots.push(slot);
      replicas.push(
        new PostgresNode(
          replicaName,
          {
            role: "replica",
            nodeName: replicaName,
            clusterName: name,
            image: s.image,
            networkName: this.network.name,
            hostPort: s.replicaPorts[n - 1],
            bindAddress: s.bindAddress,
            envs: nodeEnv(
              {
                PGC_NODE_NAME: replicaName,
                PGC_PRIMARY_HOST: primaryName,
                PGC_PRIMARY_PORT: String(CONTAINER_PORT),
                PGC_SLOT_NAME: slotName(n),
              },
              { PGC_REPLICATION_PASSWORD: replicationPassword },
            ),
            // After the primary's container (and so its host name on the network) exists.
            startAfter: [primary, slot],
          },
          child(),
        ),
      );
    }

    const replicaNames = replicas.map((r) => r.nodeName);
    const check = new ReplicationCheck(
      `${name}-check`,
      {
        environment: {
          ...superuserEnv,
          PGC_REPLICAS: JSON.stringify(
            replicas.map((r, i) => ({
              name: r.nodeName,
              host: s.host,
              port: r.hostPort,
              slot: slotName(i + 1),
            })),
          ),
          PGC_SYNC_STANDBY_NAMES: synchronousStandbyNames(s.synchronousReplicas, replicaNames),
          PGC_TIMEOUT_SECONDS: String(s.verifyTimeoutSeconds),
        },
        triggers: [primary.container.id, ...replicas.map((r) => r.container.id)],
      },
      child(primary, ...replicas, ...slots),
    );

    this.networkName = this.network.name;
    // Endpoints and URIs resolve only once the post-step has verified the cluster: whatever is
    // built from them (an app container's environment, say) then starts against a ready cluster.
    PARTS.set(this, { primary, replicas, slots, check });
    const verified = check.step.id;
    const verifiedPassword = pulumi.all([verified, superuserPassword]).apply(([, pw]) => pw);
    this.primaryEndpoint = verified.apply(() => hostPort(s.host, s.primaryPort));
    this.replicaEndpoints = verified.apply(() => replicas.map((r) => hostPort(s.host, r.hostPort)));
    this.internalPrimaryEndpoint = verified.apply(() => hostPort(primaryName, CONTAINER_PORT));
    this.internalReplicaEndpoints = verified.apply(() =>
      replicas.map((r) => hostPort(r.nodeName, CONTAINER_PORT)),
    );
    this.connectionString = pulumi.secret(
      verifiedPassword.apply((pw) => libpqUri(s, pw, [s.primaryPort], "")),
    );
    this.readOnlyConnectionString = pulumi.secret(
      verifiedPassword.apply((pw) =>
        s.replicas === 0
          ? libpqUri(s, pw, [s.primaryPort], "")
          : libpqUri(
              s,
              pw,
              s.replicaPorts,
              "?target_session_attrs=standby&load_balance_hosts=random",
            ),
      ),
    );
    this.replicationReport = check.report;

    this.registerOutputs({
      networkName: this.networkName,
      primaryEndpoint: this.primaryEndpoint,
      replicaEndpoints: this.replicaEndpoints,
      internalPrimaryEndpoint: this.internalPrimaryEndpoint,
      internalReplicaEndpoints: this.internalReplicaEndpoints,
      connectionString: this.connectionString,
      readOnlyConnectionString: this.readOnlyConnectionString,
      replicationReport: this.replicationReport,
    });
  }
}

/** A cluster's sub-components. */
interface Parts {
  readonly primary: PostgresNode;
  readonly replicas: readonly PostgresNode[];
  readonly slots: readonly ReplicationSlot[];
  readonly check: ReplicationCheck;
}

/**
 * The sub-components of each cluster, kept beside the class rather than in fields: Pulumi's
 * schema inference (component packages) turns every field of a component into an output, and it
 * can describe only Pulumi's own resource types. The getters above read them from here.
 */
const PARTS = new WeakMap<PostgresCluster, Parts>();

function partsOf(cluster: PostgresCluster): Parts {
  const parts = PARTS.get(cluster);
  if (parts === undefined) throw new Error("PostgresCluster: parts read before construction");
  return parts;
}

/** The physical slot of replica `n` on the primary. */
export function slotName(n: number): string {
  return `replica_${n}`;
}

/** `synchronous_standby_names` for `k` of the replicas: quorum commit, `ANY k (...)`. */
export function synchronousStandbyNames(k: number, replicaNames: readonly string[]): string {
  if (k === 0) return "";
  return `ANY ${k} (${replicaNames.map((n) => `"${n}"`).join(", ")})`;
}

/** Environment every node's entrypoint reads. Secrets are added separately. */
function sharedEnv(s: ClusterSettings): Record<string, string> {
  return {
    PGC_SUPERUSER: s.superuser,
    PGC_REPLICATION_USER: s.replicationUser,
    PGC_MAX_WAL_SENDERS: String(s.maxWalSenders),
    PGC_MAX_REPLICATION_SLOTS: String(s.maxReplicationSlots),
    PGC_MAX_SLOT_WAL_KEEP_SIZE: s.maxSlotWalKeepSize,
    PGC_MAX_WAL_SIZE: s.maxWalSize,
  };
}

/** A password as a secret Output, checked again once resolved (it may have been an Output). */
function resolvedPassword(field: string, value: pulumi.Input<string>): pulumi.Output<string> {
  return pulumi.secret(
    pulumi.output(value).apply((pw) => {
      const problems = new ProblemList();
      checkPassword(problems, field, pw);
      if (problems.problems.length > 0) throw new ClusterConfigError(problems.problems);
      return pw;
    }),
  );
}

function hostPort(host: string, port: number): string {
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}

function libpqUri(
  s: ClusterSettings,
  password: string,
  ports: readonly number[],
  query: string,
): string {
  const hosts = ports.map((p) => hostPort(s.host, p)).join(",");
  return `postgresql://${encodeURIComponent(s.superuser)}:${encodeURIComponent(password)}@${hosts}/${encodeURIComponent(s.database)}${query}`;
}
