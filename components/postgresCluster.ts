import * as crypto from "crypto";
import { isIP } from "net";
import * as docker from "@pulumi/docker";
import * as pulumi from "@pulumi/pulumi";
import { CONTAINER_PORT, secretsFile } from "./assets";
import { inheritedDependsOn } from "./options";
import { PgAdmin, clusterServers } from "./pgAdmin";
import {
  BACKUP_SERVER_PORT,
  CONTAINER_RESTORE_DIR,
  PostgresNode,
  containerEnv,
} from "./postgresNode";
import { ReplicationCheck, ReplicationReport } from "./replicationCheck";
import { ReplicationSlot } from "./replicationSlot";
import { RollGate } from "./rollGate";
import { ROUTER_PORTS, Router, healthPassword } from "./router";
import { Backup, BackupResult } from "./backup";
import { BackupRepository, REPOSITORY_SERVER_PORT, RepositoryAccess } from "./backupRepository";
import { ClusterTls, TlsSubject, tlsBundles } from "./tls";
import { Topology } from "./topology";
import { VersionGuard } from "./versionGuard";
import {
  ClusterConfigError,
  BackupSettings,
  ClusterSettings,
  MAX_REPLICAS,
  PostgresClusterArgs,
  ProblemList,
  RELOADABLE_SETTINGS,
  checkPassword,
  clusterNodeNames,
  isHostPath,
  validateClusterArgs,
} from "./settings";

/**
 * A PostgreSQL primary with N streaming read replicas on a Docker host: a private network, one
 * volume and container per node, one physical replication slot per standby, a topology step that
 * makes the chosen node the primary, and a post-step that seeds the `Wizards` table and proves
 * every standby has replayed it.
 *
 * Nodes have stable identities (`<name>-primary`, `<name>-replica-n`: node 0 is the first
 * primary); which node is the primary is the `primary` argument. A node's role lives in its data
 * directory, so moving the primary (a planned switchover by the topology step) replaces no
 * container. The post-step is what `pulumi up` waits on.
 */
export class PostgresCluster extends pulumi.ComponentResource {
  /** The cluster's Docker network. */
  public readonly network: docker.Network;

  /** Name of the Docker network. */
  public readonly networkName: pulumi.Output<string>;
  /** Every node: its name, its role (`primary` or `replica`) and its endpoints. */
  public readonly nodes: pulumi.Output<ClusterNode[]>;
  /** `host:port` of the primary, as published on the Docker host. */
  public readonly primaryEndpoint: pulumi.Output<string>;
  /** `host:port` of each replica (every node but the primary), as published on the Docker host. */
  public readonly replicaEndpoints: pulumi.Output<string[]>;
  /**
   * `host:port` of the primary on the cluster's network (its container name and port 5432), for
   * containers attached to `networkName`.
   */
  public readonly internalPrimaryEndpoint: pulumi.Output<string>;
  /** `host:port` of each replica on the cluster's network, for containers attached to it. */
  public readonly internalReplicaEndpoints: pulumi.Output<string[]>;
  /** `host:port` of the router's read-write endpoint: always the current primary. */
  public readonly readWriteEndpoint: pulumi.Output<string>;
  /** `host:port` of the router's read-only endpoint: the standbys, or the primary if none is up. */
  public readonly readOnlyEndpoint: pulumi.Output<string>;
  /** The router's read-write endpoint on the cluster's network (`<name>-router:5432`). */
  public readonly internalReadWriteEndpoint: pulumi.Output<string>;
  /** The router's read-only endpoint on the cluster's network (`<name>-router:5433`). */
  public readonly internalReadOnlyEndpoint: pulumi.Output<string>;
  /**
   * Read-write URI (superuser) through the router, which follows the primary across switchovers:
   * one `host:port`, so every client takes it (node-postgres, libpq of any version). Secret.
   */
  public readonly connectionString: pulumi.Output<string>;
  /** Read-only URI (superuser) through the router's read-only endpoint. Secret. */
  public readonly readOnlyConnectionString: pulumi.Output<string>;
  /**
   * Read-only libpq multi-host URI over the standbys' own ports, bypassing the router
   * (`target_session_attrs=standby`, libpq 14+; `load_balance_hosts=random`, libpq 16+; not
   * node-postgres). With 0 replicas it points at the primary. Secret.
   */
  public readonly multiHostReadOnlyConnectionString: pulumi.Output<string>;
  /** The primary and per-replica state, slot and replay lag from the latest post-step. */
  public readonly replicationReport: pulumi.Output<ReplicationReport>;
  /** pgAdmin's web UI (`http://host:port`), when `pgadmin.enabled`. */
  public readonly pgadminUrl?: pulumi.Output<string>;
  /** With `tls`: the cluster's CA certificate (PEM), for clients' `sslrootcert`. */
  public readonly caCertificate?: pulumi.Output<string>;
  /** With `backup`: the last backup the component took (pgBackRest's label, times, size, WAL). */
  public readonly backup?: pulumi.Output<BackupResult>;

  /** Node 0, `<name>-primary`: the first primary (see `nodes` for the current roles). */
  get primary(): PostgresNode {
    return partsOf(this).nodes[0];
  }
  /** Nodes 1..N, `<name>-replica-n`, in order. */
  get replicas(): readonly PostgresNode[] {
    return partsOf(this).nodes.slice(1);
  }
  /** The slot lifetimes, one per replica node (dropped wherever they are when it goes). */
  get slots(): readonly ReplicationSlot[] {
    return partsOf(this).slots;
  }
  /** The roll gates, in chain order: the standbys, then the desired primary. */
  get rollGates(): readonly RollGate[] {
    return partsOf(this).gates;
  }
  /** The version guard: the first step, before anything is created on an engine. */
  get guard(): VersionGuard {
    return partsOf(this).guard;
  }
  /** The topology step. */
  get topology(): Topology {
    return partsOf(this).topology;
  }
  /** The post-step. */
  get check(): ReplicationCheck {
    return partsOf(this).check;
  }
  /** The router (HAProxy) behind the read-write and read-only endpoints. */
  get router(): Router {
    return partsOf(this).router;
  }
  /** pgAdmin, when enabled. */
  get pgadmin(): PgAdmin | undefined {
    return partsOf(this).pgadmin;
  }

  /** With `backup` and `hosts`: the backup repository's container and its pgBackRest server. */
  get backupRepository(): BackupRepository | undefined {
    return partsOf(this).repository;
  }

  constructor(name: string, args: PostgresClusterArgs, opts?: PostgresClusterOptions) {
    const { hostProviders, ...componentOpts } = opts ?? {};
    super("pg-cluster:index:PostgresCluster", name, {}, componentOpts);
    const s = validateClusterArgs(args, hostProviderProblems(args, hostProviders), name);
    // What the user said the cluster must follow: Pulumi records a component's dependsOn on the
    // component only, so every child records it too (and so is deleted before it).
    const userDeps = inheritedDependsOn(opts);
    // First, before any resource of the cluster is created, and before any node container is
    // created or replaced with an image: that image's PostgreSQL major must be the one the
    // volumes' data was written by, and a restore's repository must hold what it asks for, or the
    // up stops there.
    const guard = new VersionGuard(
      `${name}-guard`,
      {
        image: s.image,
        clusterName: name,
        dockerHosts: s.hosts?.list.map((h) => h.dockerHost),
        backup: s.backup !== undefined,
        restore: s.restore,
        // With hosts, the restoring primary's host holds the repository.
        restoreDockerHost: s.hosts?.list.find(
          (h) => h.name === s.hosts?.placement[s.nodeNames.indexOf(s.primary)],
        )?.dockerHost,
      },
      { parent: this, dependsOn: userDeps },
    );
    const ctx = clusterContext(
      name,
      s,
      (...deps) => ({ parent: this, dependsOn: [...userDeps, guard, ...deps] }),
      hostProviders ?? {},
    );

    this.network = ctx.sites[0].network;
    const { nodes, slots, gates } = createNodes(ctx, guard);
    const router = createRouter(ctx, gates[0]);
    const { topology, check } = createSteps(ctx, nodes, slots, router, guard);
    const pgadmin = s.pgadmin ? createPgAdmin(ctx, this.network.name) : undefined;
    const backup = s.backup ? createBackup(ctx, s.backup, topology) : undefined;
    const repository = ctx.repository?.resource;
    PARTS.set(this, {
      guard,
      nodes,
      slots,
      gates,
      topology,
      check,
      router,
      pgadmin,
      backup,
      repository,
    });

    const o = clusterOutputs(ctx, check);
    this.networkName = this.network.name;
    this.nodes = o.nodes;
    this.primaryEndpoint = o.primaryEndpoint;
    this.replicaEndpoints = o.replicaEndpoints;
    this.internalPrimaryEndpoint = o.internalPrimaryEndpoint;
    this.internalReplicaEndpoints = o.internalReplicaEndpoints;
    this.readWriteEndpoint = o.readWriteEndpoint;
    this.readOnlyEndpoint = o.readOnlyEndpoint;
    this.internalReadWriteEndpoint = o.internalReadWriteEndpoint;
    this.internalReadOnlyEndpoint = o.internalReadOnlyEndpoint;
    this.connectionString = o.connectionString;
    this.readOnlyConnectionString = o.readOnlyConnectionString;
    this.multiHostReadOnlyConnectionString = o.multiHostReadOnlyConnectionString;
    this.replicationReport = check.report;
    if (ctx.tls) this.caCertificate = ctx.tls.caCertificate;
    if (backup) this.backup = backup.result;
    if (pgadmin && s.pgadmin) {
      const url = `http://${hostPort(ctx.sites[0].address, s.pgadmin.port)}`;
      this.pgadminUrl = pulumi.all([check.step.id, pgadmin.container.id]).apply(() => url);
    }
    this.registerOutputs({
      networkName: this.networkName,
      ...o,
      replicationReport: this.replicationReport,
      ...(this.pgadminUrl ? { pgadminUrl: this.pgadminUrl } : {}),
      ...(this.caCertificate ? { caCertificate: this.caCertificate } : {}),
      ...(this.backup ? { backup: this.backup } : {}),
    });
  }
}

/** What the cluster's parts are built from: settings, secrets, addresses and child options. */
interface ClusterContext {
  readonly name: string;
  readonly s: ClusterSettings;
  /** Options for a child: parented to the cluster, after the user's dependsOn and `deps`. */
  readonly child: (...deps: pulumi.Input<pulumi.Resource>[]) => pulumi.ComponentResourceOptions;
  readonly superuserPassword: pulumi.Output<string>;
  readonly replicationPassword: pulumi.Output<string>;
  /** The router check role's password (derived from the superuser's). */
  readonly health: pulumi.Output<string>;
  readonly routerName: string;
  /** The superuser's credentials, as the host-side programs read them. */
  readonly credentials: Record<string, pulumi.Input<string>>;
  /** What every host-side step of the cluster reads: the nodes, credentials, the primary asked. */
  readonly stepEnv: Record<string, pulumi.Input<string>>;
  readonly addresses: readonly NodeAddress[];
  /** The Docker hosts, the first one the router's (one, the provider's, without `hosts`). */
  readonly sites: readonly Site[];
  /** The CA and each node's certificate, with `tls`. */
  readonly tls?: ClusterTls;
  /** With `backup`: the pgBackRest repository's volume, on its host (kept by destroy). */
  readonly backupVolume?: docker.Volume;
  /** With `backup` and `hosts`: the repository's container and host, and how each node reaches it. */
  readonly repository?: RepositoryPlace;
  /** Options for a child on `site`'s engine ({@link child}, with that host's provider). */
  readonly on: (
    site: Site,
    ...deps: pulumi.Input<pulumi.Resource>[]
  ) => pulumi.ComponentResourceOptions;
}

/**
 * A Docker host of the cluster: its name and engine (none without `hosts`: the engine of the
 * docker provider in the component's options), the address its published ports are reached at,
 * the address they are published on, its provider and the cluster's network on it.
 */
interface Site {
  readonly name?: string;
  readonly dockerHost?: string;
  readonly address: string;
  readonly bindAddress: string;
  readonly provider?: docker.Provider;
  readonly network: docker.Network;
}

/**
 * The cluster's Docker hosts, each with its network: one per host in `hosts`, each with a
 * provider of its own; without `hosts`, the one engine of the provider in opts, its resources
 * named as before hosts existed (so existing stacks keep them).
 */
function clusterSites(
  name: string,
  s: ClusterSettings,
  child: ClusterContext["child"],
  hostProviders: Readonly<Record<string, docker.Provider>>,
): Site[] {
  const network = (resource: string, opts: pulumi.ComponentResourceOptions) =>
    new docker.Network(
      resource,
      {
        name: `${name}-net`,
        driver: "bridge",
        labels: [{ label: "pg-cluster.cluster", value: name }],
      },
      opts,
    );
  if (!s.hosts) {
    return [
      { address: s.host, bindAddress: s.bindAddress, network: network(`${name}-net`, child()) },
    ];
  }
  return s.hosts.list.map((h) => {
    // The user's provider for that host (registry auth, ssh options, TLS to the engine), or ours.
    const provider =
      hostProviders[h.name] ??
      new docker.Provider(`${name}-${h.name}`, { host: h.dockerHost }, child());
    return {
      name: h.name,
      dockerHost: h.dockerHost,
      address: h.address,
      // Other hosts connect to it there; a DNS name cannot be bound, so every address is then.
      bindAddress: isIP(h.address) ? h.address : "0.0.0.0",
      provider,
      network: network(`${name}-net-${h.name}`, { ...child(), provider }),
    };
  });
}

/**
 * What each node's certificate must name: every name and address it is dialled at with
 * verify-full. Its container name (its peers on the same host), every host's address (peers on
 * other hosts and the steps reach it there, and clients through the router reach the router's
 * host and get this node's certificate), the router's name (clients on the cluster network), and
 * the published `host`, `localhost` and 127.0.0.1 (clients on the Docker host). With backups across
 * hosts, the repository's certificate too (its name and its host's address); and every address as
 * a DNS name as well, for pgBackRest 2.45's TLS client matches the host it dials against DNS names
 * and the CN only, never an IP address entry.
 */
function tlsSubjects(
  s: ClusterSettings,
  sites: readonly Site[],
  routerName: string,
  repositoryName: string,
): TlsSubject[] {
  const addresses = [...new Set([s.host, ...sites.map((site) => site.address), "127.0.0.1"])];
  const ipAddresses = addresses.filter((a) => isIP(a));
  const repository = s.backup?.repository;
  const names = repository ? addresses : addresses.filter((a) => !isIP(a));
  const nodes = s.nodeNames.map((nodeName) => ({
    nodeName,
    dnsNames: [...new Set([nodeName, routerName, ...names, "localhost"])],
    ipAddresses,
  }));
  if (!repository) return nodes;
  const { address } = siteNamed(sites, repository.host);
  return [
    ...nodes,
    {
      nodeName: repositoryName,
      dnsNames: [repositoryName, address],
      ipAddresses: isIP(address) ? [address] : [],
    },
  ];
}

/**
 * The component's resource options: Pulumi's, and `hostProviders`, a docker provider per host name
 * of `hosts`, used for that host's resources instead of one the component makes (the steps still
 * reach the engine at the host's `dockerHost` with the docker CLI).
 */
export interface PostgresClusterOptions extends pulumi.ComponentResourceOptions {
  readonly hostProviders?: Readonly<Record<string, docker.Provider>>;
}

/** hostProviders must name hosts of `hosts` (and needs `hosts`). */
function hostProviderProblems(
  args: PostgresClusterArgs,
  hostProviders: PostgresClusterOptions["hostProviders"],
): ProblemList {
  const problems = new ProblemList();
  const names = new Set((Array.isArray(args.hosts) ? args.hosts : []).map((h) => h?.name));
  for (const key of Object.keys(hostProviders ?? {})) {
    if (!names.has(key)) {
      problems.add(
        "hostProviders",
        key,
        "names no host of hosts (a provider is given per host name)",
        `name one of ${names.size ? [...names].join(", ") : "the hosts (set hosts first)"}`,
      );
    }
  }
  return problems;
}

function clusterContext(
  name: string,
  s: ClusterSettings,
  child: ClusterContext["child"],
  hostProviders: Readonly<Record<string, docker.Provider>>,
): ClusterContext {
  const superuserPassword = resolvedPassword("superuserPassword", s.superuserPassword);
  const ports = [s.primaryPort, ...s.replicaPorts];
  const credentials = {
    PGC_SUPERUSER: s.superuser,
    PGC_SUPERUSER_PASSWORD: superuserPassword,
    PGC_DATABASE: s.database,
  };
  const sites = clusterSites(name, s, child, hostProviders);
  const addresses = s.nodeNames.map((nodeName, i) => {
    const site = siteNamed(sites, s.hosts?.placement[i]);
    return {
      name: nodeName,
      host: site.address,
      port: ports[i],
      internalHost: nodeName,
      slot: nodeSlotName(i),
      ...(s.hosts ? { site: site.name, dockerHost: site.dockerHost } : {}),
    };
  });
  const routerName = `${name}-router`;
  const health = pulumi.secret(superuserPassword.apply(healthPassword));
  const tls = s.tls
    ? new ClusterTls(
        `${name}-tls`,
        {
          clusterName: name,
          nodes: tlsSubjects(s, sites, routerName, `${name}-repository`),
          renewal: s.tlsRenewal,
        },
        child(),
      )
    : undefined;
  // The repository outlives the cluster: `pulumi destroy` leaves it (a restore needs it most then).
  // A volume unless backup.repositoryPath puts it in a directory of the Docker host; on
  // backup.host with hosts.
  const repositorySite = siteNamed(sites, s.backup?.repository?.host);
  const backupVolume =
    s.backup && s.backup.repositoryPath === undefined
      ? new docker.Volume(
          `${name}-backup`,
          { name: `${name}-backup`, labels: [{ label: "pg-cluster.backup-of", value: name }] },
          {
            ...child(),
            ...(repositorySite.provider ? { provider: repositorySite.provider } : {}),
            retainOnDelete: true,
          },
        )
      : undefined;
  const repository =
    s.backup?.repository && tls
      ? createRepository(name, s, tls, repositorySite, backupVolume, child)
      : undefined;
  return {
    name,
    s,
    child,
    sites,
    tls,
    backupVolume,
    ...(repository ? { repository } : {}),
    on: (site, ...deps) => ({
      ...child(...deps),
      ...(site.provider ? { provider: site.provider } : {}),
    }),
    superuserPassword,
    replicationPassword: resolvedPassword("replicationPassword", s.replicationPassword),
    health,
    routerName,
    credentials,
    stepEnv: {
      ...credentials,
      PGC_REPLICATION_USER: s.replicationUser,
      PGC_NODES: JSON.stringify(addresses),
      PGC_DESIRED_PRIMARY: s.primary,
      PGC_TIMEOUT_SECONDS: String(s.verifyTimeoutSeconds),
      PGC_SWITCHOVER_MAX_LAG_BYTES: String(s.switchoverMaxLagBytes),
      PGC_ROUTER: routerName,
      ...(sites[0].dockerHost ? { PGC_ROUTER_DOCKER_HOST: sites[0].dockerHost } : {}),
      PGC_HEALTH_PASSWORD: health,
      ...(tls ? { PGC_TLS: "on", PGC_TLS_CA: tls.caCertificate } : {}),
    },
    addresses,
  };
}

/** Where a cluster across hosts keeps its backup repository (`backup.host`), and its container. */
interface RepositoryPlace {
  readonly name: string;
  readonly site: Site;
  /** The port its server is published at on its host; node i's backup server: port + 1 + i. */
  readonly port: number;
  readonly resource: BackupRepository;
}

/**
 * The backup repository's container on `backup.host` (with hosts): the repository mounted, its
 * pgBackRest server published for the nodes of the other hosts (those of its own host reach it
 * by name), its certificate from the cluster's CA, every node name's CN authorised for this
 * stanza (pgBackRest takes no wildcard CN).
 */
function createRepository(
  name: string,
  s: ClusterSettings,
  tls: ClusterTls,
  site: Site,
  volume: docker.Volume | undefined,
  child: ClusterContext["child"],
): RepositoryPlace {
  const b = s.backup as BackupSettings;
  const { port } = b.repository as NonNullable<BackupSettings["repository"]>;
  const repositoryName = `${name}-repository`;
  const bundle = tlsBundles(tls, [repositoryName]).apply(
    (all) => (JSON.parse(all) as Record<string, string>)[repositoryName],
  );
  const resource = new BackupRepository(
    repositoryName,
    {
      containerName: repositoryName,
      clusterName: name,
      image: s.image,
      networkName: site.network.name,
      bindAddress: site.bindAddress,
      hostPort: port,
      repository: volume?.name ?? (b.repositoryPath as string),
      envs: Object.entries({
        PGC_NODE_NAME: repositoryName,
        PGC_BACKUP: "on",
        PGC_TLS: "on",
        PGC_STANZA: name,
        PGC_SUPERUSER: s.superuser,
        // Every node name the cluster can have, not the nodes of the moment: a scale then leaves
        // this container alone (a name's certificate comes from the cluster's CA only).
        PGC_REPOSITORY_CLIENTS: clusterNodeNames(name, MAX_REPLICAS).join(" "),
        PGC_BACKUP_RETENTION_FULL: String(b.retentionFull),
        PGC_BACKUP_COMPRESS: b.compress,
        ...(b.repositoryPath ? { PGC_BACKUP_REPO_SOURCE: b.repositoryPath } : {}),
      }).map(([k, v]) => `${k}=${v}`),
      tlsBundle: pulumi.secret(bundle),
    },
    { ...child(), ...(site.provider ? { provider: site.provider } : {}) },
  );
  return { name: repositoryName, site, port, resource };
}

/**
 * Every node, each container after its roll gate, chained: the standbys in node order, then the
 * desired primary, each gate after the container before it. An up that replaces containers (a new
 * image, new assets) so replaces them one at a time, each standby caught up before the next and
 * the primary after a switchover away from it (docs/design/changes-without-outage.md); a new
 * cluster's containers are created in the same order. A replica node's container also comes
 * after its slot's lifetime, so on removal the container goes first, then the slot is dropped.
 * Every node gets the same kind of environment, whatever its role: any node may become the
 * primary, and a role change must not change a container's inputs (that would replace it).
 */
function createNodes(
  ctx: ClusterContext,
  guard: VersionGuard,
): { nodes: PostgresNode[]; slots: ReplicationSlot[]; gates: RollGate[] } {
  const { s } = ctx;
  // Uploaded as a file, not set in the environment: `docker inspect` and `docker exec` show that.
  const secrets = pulumi.secret(
    pulumi
      .all([ctx.superuserPassword, ctx.replicationPassword])
      .apply(([su, repl]) => secretsFile(su, repl)),
  );
  const desired = ctx.addresses.find((a) => a.name === s.primary) ?? ctx.addresses[0];
  const chain = [...ctx.addresses.filter((a) => a !== desired), desired];
  const made = new Map<NodeAddress, { node: PostgresNode; slot?: ReplicationSlot }>();
  const gates: RollGate[] = [];
  let previous: PostgresNode | undefined;
  for (const a of chain) {
    const i = ctx.addresses.indexOf(a);
    const slot =
      i === 0
        ? undefined
        : new ReplicationSlot(
            `${a.name}-slot`,
            {
              slotName: a.slot,
              // Its delete connects to the primary: with TLS, verify-full like every step.
              environment: nodesEnv(ctx),
            },
            ctx.child(),
          );
    const site = siteOf(ctx, a);
    // The repository a new cluster is restored from is on the desired primary's host (it
    // restores; the others clone it): mounted by the nodes there only.
    const restoresHere = s.restore !== undefined && site === siteOf(ctx, desired);
    // The other hosts' nodes (and router) connect from those hosts' addresses.
    const peers = ctx.sites.filter((other) => other !== site).map((other) => other.address);
    const container = {
      nodeName: a.name,
      image: s.image,
      hostPort: a.port,
      bindAddress: site.bindAddress,
      envs: nodeEnv(s, {
        PGC_NODE_NAME: a.name,
        PGC_SLOT_NAME: a.slot,
        PGC_DATABASE: s.database,
        ...(peers.length > 0 ? { PGC_REPLICATION_PEERS: peers.join(" ") } : {}),
        ...(ctx.tls ? { PGC_TLS: "on" } : {}),
        ...(s.backup
          ? {
              PGC_BACKUP: "on",
              PGC_STANZA: ctx.name,
              PGC_BACKUP_RETENTION_FULL: String(s.backup.retentionFull),
              // lz4 was the only value before backup.compress: existing nodes keep their env.
              ...(s.backup.compress !== "lz4" ? { PGC_BACKUP_COMPRESS: s.backup.compress } : {}),
              // A mount alone changes no env, and the roll gates read the env: a host path is
              // named in it (the volume was the only place before, so existing nodes keep theirs).
              ...(s.backup.repositoryPath && !ctx.repository
                ? { PGC_BACKUP_REPO_SOURCE: s.backup.repositoryPath }
                : {}),
              ...(ctx.repository ? repositoryEnv(ctx.repository, site) : {}),
            }
          : {}),
        ...(restoresHere ? { PGC_RESTORE_REPO: CONTAINER_RESTORE_DIR } : {}),
        ...(restoresHere && isHostPath(s.restore.repository)
          ? { PGC_RESTORE_REPO_SOURCE: s.restore.repository }
          : {}),
      }),
      secrets,
      ...(s.backup && !ctx.repository
        ? { backupRepository: ctx.backupVolume?.name ?? (s.backup.repositoryPath as string) }
        : {}),
      ...(ctx.repository ? { backupServerPort: ctx.repository.port + 1 + i } : {}),
      ...(restoresHere ? { restoreRepository: s.restore.repository } : {}),
    };
    const spec = containerEnv(container).apply((env) => JSON.stringify({ image: s.image, env }));
    const gate = new RollGate(
      `${a.name}-roll`,
      {
        environment: {
          ...ctx.stepEnv,
          PGC_REPLICATION_PASSWORD: ctx.replicationPassword,
          PGC_ROLL_NODE: a.name,
          PGC_ROLL_AFTER: previous?.nodeName ?? "",
          PGC_ROLL_SPEC: spec,
          // The first gate installs TLS on the running nodes (turning it on or off).
          ...tlsFiles(ctx),
        },
        // Runs when its node's container will be replaced (a digest of what the up will run:
        // secret, as the environment holds passwords). Other changes to its environment (the
        // chain re-ordered by a new primary, a scale) only record it (RollGate's update).
        triggers: [pulumi.secret(spec.apply(sha256))],
      },
      ctx.child(guard.step, ...(previous ? [previous.container] : [])),
    );
    gates.push(gate);
    const node = new PostgresNode(
      a.name,
      {
        firstRole: i === 0 ? "primary" : "replica",
        clusterName: ctx.name,
        networkName: site.network.name,
        ...container,
        startAfter: slot ? [slot, guard.step, gate.step] : [guard.step, gate.step],
      },
      ctx.on(site),
    );
    made.set(a, { node, slot });
    previous = node;
  }
  const ordered = ctx.addresses.map((a) => made.get(a)!);
  return {
    nodes: ordered.map((m) => m.node),
    slots: ordered.flatMap((m) => (m.slot ? [m.slot] : [])),
    gates,
  };
}

/**
 * How a node on `site` reaches the repository's server: by name on the repository's own host, else
 * at its host's published address.
 */
function repositoryEnv(r: RepositoryPlace, site: Site): Record<string, string> {
  const local = site === r.site;
  return {
    PGC_BACKUP_REPO_HOST: local ? r.name : r.site.address,
    PGC_BACKUP_REPO_PORT: String(local ? REPOSITORY_SERVER_PORT : r.port),
  };
}

/**
 * The router: every node is a server of both backends; its checks find the roles. After the first
 * roll gate: on a password change that gate gives the nodes' check role the password a new
 * router checks with, before the router is replaced.
 */
function createRouter(ctx: ClusterContext, firstGate: RollGate): Router {
  const { s } = ctx;
  // On the first host: the nodes there by name, the others at their host's address.
  const site = ctx.sites[0];
  return new Router(
    ctx.routerName,
    {
      routerName: ctx.routerName,
      clusterName: ctx.name,
      image: s.routerImage,
      networkName: site.network.name,
      servers: ctx.addresses.map((a) =>
        siteOf(ctx, a) === site
          ? { name: a.name }
          : { name: a.name, address: a.host, port: a.port },
      ),
      healthPassword: ctx.health,
      bindAddress: site.bindAddress,
      readWritePort: s.readWritePort,
      readOnlyPort: s.readOnlyPort,
    },
    ctx.on(site, firstGate.step),
  );
}

/**
 * The backup step: after the topology step (which made the stanza), from a standby or the primary
 * (`backup.target`); again at each new `backup.trigger` (its type: `backup.type`; the first
 * backup is full).
 */
function createBackup(
  ctx: ClusterContext,
  b: NonNullable<ClusterSettings["backup"]>,
  topology: Topology,
): Backup {
  return new Backup(
    `${ctx.name}-backup`,
    {
      environment: {
        ...nodesEnv(ctx),
        PGC_BACKUP_TYPE: b.trigger === "" ? "full" : b.type,
        PGC_BACKUP_TARGET: b.target,
        ...(ctx.repository ? { PGC_REPOSITORY: repositoryStepEnv(ctx, ctx.repository) } : {}),
      },
      // A repository in a new place holds no backup yet: a host path in the triggers takes one.
      triggers: [b.trigger, ...(b.repositoryPath ? [b.repositoryPath] : [])],
      // A change of its environment alone (a scale, a password) takes no backup: it reports the
      // latest one again.
      update: "node backup.mjs info",
    },
    ctx.child(topology),
  );
}

/**
 * backup.mjs's PGC_REPOSITORY: the repository's container and engine, and where it reaches each
 * node's backup server (by name and the server's own port on its host, else the node's host
 * address and published port).
 */
function repositoryStepEnv(ctx: ClusterContext, r: RepositoryPlace): string {
  const servers = Object.fromEntries(
    ctx.addresses.map((a, i) =>
      siteOf(ctx, a) === r.site
        ? [a.name, { host: a.name, port: BACKUP_SERVER_PORT }]
        : [a.name, { host: a.host, port: r.port + 1 + i }],
    ),
  );
  const access: RepositoryAccess = {
    name: r.name,
    ...(r.site.dockerHost ? { dockerHost: r.site.dockerHost } : {}),
    servers,
  };
  return JSON.stringify(access);
}

/**
 * What a step needs to reach the nodes as the superuser, and no more (the slot steps, the backup
 * step): the credentials, the nodes, and with TLS the CA they are verified against.
 */
function nodesEnv(ctx: ClusterContext): Record<string, pulumi.Input<string>> {
  return {
    ...ctx.credentials,
    PGC_NODES: JSON.stringify(ctx.addresses),
    ...(ctx.tls ? { PGC_TLS_CA: ctx.tls.caCertificate } : {}),
  };
}

/** The steps' PGC_TLS_FILES (ctl.sh tls's input for each node, secret), with TLS. */
function tlsFiles(ctx: ClusterContext): Record<string, pulumi.Input<string>> {
  return ctx.tls ? { PGC_TLS_FILES: tlsBundles(ctx.tls, ctx.s.nodeNames) } : {};
}

/** The Docker host a node runs on. */
function siteOf(ctx: ClusterContext, a: NodeAddress): Site {
  return siteNamed(ctx.sites, a.site);
}

/** The host of that name (a name from `hosts`), or the one host when there is no `hosts`. */
function siteNamed(sites: readonly Site[], name: string | undefined): Site {
  return sites.find((site) => site.name === name) ?? sites[0];
}

/**
 * pgAdmin with the cluster's servers as config names the roles (a switchover re-registers them).
 * Its login password is checked once resolved, like the cluster's own passwords.
 */
function createPgAdmin(ctx: ClusterContext, networkName: pulumi.Output<string>): PgAdmin {
  const { s } = ctx;
  const settings = s.pgadmin as NonNullable<ClusterSettings["pgadmin"]>;
  return new PgAdmin(
    `${ctx.name}-pgadmin`,
    {
      containerName: `${ctx.name}-pgadmin`,
      clusterName: ctx.name,
      image: settings.image,
      networkName,
      servers: clusterServers(s.nodeNames, s.primary, ctx.routerName),
      database: s.database,
      username: s.superuser,
      email: settings.email,
      password: resolvedPassword("pgadmin.password", settings.password, "pgadminPassword"),
      bindAddress: s.bindAddress,
      hostPort: settings.port,
      ...(ctx.tls ? { caCertificate: ctx.tls.caCertificate } : {}),
    },
    ctx.on(ctx.sites[0]),
  );
}

/** The topology step, then the post-step. */
function createSteps(
  ctx: ClusterContext,
  nodes: readonly PostgresNode[],
  slots: readonly ReplicationSlot[],
  router: Router,
  guard: VersionGuard,
): { topology: Topology; check: ReplicationCheck } {
  const { s } = ctx;
  const stepEnv = {
    ...ctx.stepEnv,
    // In both steps' inputs: the topology step applies it, and the post-step's report shows it.
    PGC_SYNCHRONOUS_REPLICAS: String(s.synchronousReplicas),
  };
  // Both steps run again when the desired primary changes or a container is created or replaced.
  const triggers = [s.primary, ...nodes.map((n) => n.container.id)];
  const topology = new Topology(
    `${ctx.name}-topology`,
    {
      environment: {
        ...stepEnv,
        // Installed on every node by ctl.sh tls and a reload: a new certificate re-runs only
        // this step (and the post-step), no container.
        ...tlsFiles(ctx),
        ...(s.backup ? { PGC_BACKUP: "on" } : {}),
        // A new cluster's primary is restored (ctl.sh bootstrap-restore) from the stanza the
        // guard found in the repository; empty once the volumes hold data (the guard ran again).
        ...(s.restore
          ? {
              PGC_RESTORE: guard.result.apply((r) =>
                r.restore
                  ? JSON.stringify({
                      stanza: r.restore.stanza,
                      backup: r.restore.backup,
                      targetTime: s.restore?.targetTime,
                      targetLsn: s.restore?.targetLsn,
                    })
                  : "",
              ),
            }
          : {}),
        // Applied to every node by ALTER SYSTEM and a reload: a change re-runs only this step.
        PGC_SETTINGS: JSON.stringify(
          Object.fromEntries(
            Object.entries(RELOADABLE_SETTINGS).map(([arg, setting]) => [
              setting,
              s[arg as keyof typeof RELOADABLE_SETTINGS],
            ]),
          ),
        ),
      },
      triggers,
    },
    ctx.child(...nodes, ...slots, router, ...(ctx.repository ? [ctx.repository.resource] : [])),
  );
  const routed = (port: number) => ({ host: ctx.sites[0].address, port });
  const check = new ReplicationCheck(
    `${ctx.name}-check`,
    {
      environment: {
        ...stepEnv,
        PGC_NODE_CONTAINERS: "1",
        // The report then has the primary's WAL archiver (and the up warns while it fails).
        ...(s.backup ? { PGC_BACKUP: "on" } : {}),
        // What the topology step did: when a run of it changed something (a reload, say), the
        // post-step runs again and reports it.
        PGC_TOPOLOGY_RESULT: topology.step.stdout,
        PGC_ROUTER_ENDPOINTS: JSON.stringify({
          readWrite: routed(s.readWritePort),
          readOnly: routed(s.readOnlyPort),
        }),
      },
      // A replaced router is proven again too.
      triggers: [...triggers, router.container.id],
    },
    ctx.child(topology, ...nodes, ...slots, router),
  );
  return { topology, check };
}

/**
 * The cluster's endpoints and URIs. They resolve only once the post-step has verified the
 * cluster: whatever is built from them (an app container's environment, say) then starts against
 * a ready cluster.
 */
function clusterOutputs(ctx: ClusterContext, check: ReplicationCheck) {
  const { s, addresses } = ctx;
  const verified = check.step.id;
  const after = <T>(value: () => T) => verified.apply(value);
  const primary = addresses.find((a) => a.name === s.primary) ?? addresses[0];
  const standbys = addresses.filter((a) => a !== primary);
  const published = (a: NodeAddress) => hostPort(a.host, a.port);
  const internal = (a: NodeAddress) => hostPort(a.internalHost, CONTAINER_PORT);
  const routerAt = (port: number) => hostPort(ctx.sites[0].address, port);
  // With TLS, clients verify the node against the CA (caCertificate: PGSSLROOTCERT).
  const tlsParams = s.tls ? ["sslmode=verify-full"] : [];
  const uri = (endpoints: string[], params: string[] = []) => {
    const all = [...params, ...tlsParams];
    const query = all.length > 0 ? `?${all.join("&")}` : "";
    return pulumi.secret(
      pulumi
        .all([verified, ctx.superuserPassword])
        .apply(([, pw]) => libpqUri(s, pw, endpoints, query)),
    );
  };
  return {
    nodes: after(() =>
      addresses.map((a) => ({
        name: a.name,
        role: a === primary ? "primary" : "replica",
        endpoint: published(a),
        internalEndpoint: internal(a),
      })),
    ),
    primaryEndpoint: after(() => published(primary)),
    replicaEndpoints: after(() => standbys.map(published)),
    internalPrimaryEndpoint: after(() => internal(primary)),
    internalReplicaEndpoints: after(() => standbys.map(internal)),
    readWriteEndpoint: after(() => routerAt(s.readWritePort)),
    readOnlyEndpoint: after(() => routerAt(s.readOnlyPort)),
    internalReadWriteEndpoint: after(() => hostPort(ctx.routerName, ROUTER_PORTS.readWrite)),
    internalReadOnlyEndpoint: after(() => hostPort(ctx.routerName, ROUTER_PORTS.readOnly)),
    connectionString: uri([routerAt(s.readWritePort)]),
    readOnlyConnectionString: uri([routerAt(s.readOnlyPort)]),
    multiHostReadOnlyConnectionString:
      standbys.length === 0
        ? uri([published(primary)])
        : uri(standbys.map(published), [
            "target_session_attrs=standby",
            "load_balance_hosts=random",
          ]),
  };
}

/** One node in the {@link PostgresCluster.nodes} output. */
export interface ClusterNode {
  /** Node name: its container's name, and the value `primary` takes. */
  name: string;
  /** `primary` or `replica`. */
  role: string;
  /** `host:port` as published on the Docker host. */
  endpoint: string;
  /** `host:port` on the cluster's network. */
  internalEndpoint: string;
}

/**
 * Where the host-side steps (and nodes on other Docker hosts) reach a node, its name on its host's
 * network, its slot's name and, with several hosts, its host's name and engine.
 */
interface NodeAddress {
  readonly name: string;
  readonly host: string;
  readonly port: number;
  readonly internalHost: string;
  readonly slot: string;
  readonly site?: string;
  readonly dockerHost?: string;
}

/** A cluster's sub-components. */
interface Parts {
  readonly nodes: readonly PostgresNode[];
  readonly slots: readonly ReplicationSlot[];
  readonly gates: readonly RollGate[];
  readonly topology: Topology;
  readonly check: ReplicationCheck;
  readonly router: Router;
  readonly pgadmin?: PgAdmin;
  readonly backup?: Backup;
  readonly repository?: BackupRepository;
  readonly guard: VersionGuard;
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

/**
 * Node `i`'s physical slot on whichever node is the primary: `replica_n` for replica n (the names
 * clusters made before roles already use), `primary` for node 0 once it is a standby.
 */
export function nodeSlotName(i: number): string {
  return i === 0 ? "primary" : `replica_${i}`;
}

/** The environment of a node's entrypoint: the same keys for every node, and no password. */
function nodeEnv(s: ClusterSettings, extra: Record<string, string>): string[] {
  const shared = {
    PGC_SUPERUSER: s.superuser,
    PGC_REPLICATION_USER: s.replicationUser,
    PGC_MAX_WAL_SENDERS: String(s.maxWalSenders),
    PGC_MAX_REPLICATION_SLOTS: String(s.maxReplicationSlots),
  };
  return Object.entries({ ...shared, ...extra }).map(([k, v]) => `${k}=${v}`);
}

/** A password as a secret Output, checked again once resolved (it may have been an Output). */
function resolvedPassword(
  field: string,
  value: pulumi.Input<string>,
  configKey: string = field,
): pulumi.Output<string> {
  return pulumi.secret(
    pulumi.output(value).apply((pw) => {
      const problems = new ProblemList();
      checkPassword(problems, field, pw, configKey);
      if (problems.problems.length > 0) throw new ClusterConfigError(problems.problems);
      return pw;
    }),
  );
}

function sha256(text: string): string {
  return crypto.createHash("sha256").update(text).digest("hex");
}

function hostPort(host: string, port: number): string {
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}

function libpqUri(
  s: ClusterSettings,
  password: string,
  endpoints: readonly string[],
  query: string,
): string {
  const hosts = endpoints.join(",");
  return `postgresql://${encodeURIComponent(s.superuser)}:${encodeURIComponent(password)}@${hosts}/${encodeURIComponent(s.database)}${query}`;
}
