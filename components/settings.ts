import * as pulumi from "@pulumi/pulumi";

/** Most replicas one cluster may have: each needs a host port, a slot and two WAL senders. */
export const MAX_REPLICAS = 16;

/** Defaults, applied once in {@link validateClusterArgs} with `??` (0 replicas is legal). */
export const DEFAULTS = {
  replicas: 1,
  image: "postgres:16",
  primaryPort: 5432,
  replicaBasePort: 5433,
  bindAddress: "127.0.0.1",
  host: "localhost",
  database: "mydb",
  superuser: "postgres",
  replicationUser: "replicator",
  synchronousReplicas: 0,
  maxSlotWalKeepSize: "1GB",
  maxWalSize: "1GB",
  verifyTimeoutSeconds: 120,
  switchoverMaxLag: "16MB",
  routerImage: "haproxy:2.6",
  tls: true,
  tlsRenewal: "",
} as const;

/** Defaults of the optional pgAdmin ({@link PgAdminArgs}). */
export const PGADMIN_DEFAULTS = {
  image: "dpage/pgadmin4:9",
  email: "admin@example.com",
} as const;

/**
 * Arguments applied to running nodes by `ALTER SYSTEM` and `pg_reload_conf()` (PostgreSQL context
 * `sighup`): changing one replaces and restarts no container. Argument -> PostgreSQL setting.
 * (`synchronousReplicas` is reloaded too, as `synchronous_standby_names` on the primary.)
 */
export const RELOADABLE_SETTINGS = {
  maxWalSize: "max_wal_size",
  maxSlotWalKeepSize: "max_slot_wal_keep_size",
} as const;

/** Arguments of a {@link PostgresCluster}. */
export interface PostgresClusterArgs {
  /**
   * Number of streaming replicas. A plain number: it decides how many resources exist.
   * @default 1
   * Whole number from 0 to {@link MAX_REPLICAS}.
   */
  readonly replicas?: number;
  /**
   * Docker image for every node: the official `postgres` image or any image that meets the
   * contract in README.md (server binaries on PATH, a `postgres` user, gosu or setpriv).
   * @default "postgres:16"
   */
  readonly image?: string;
  /** Host port published for the primary. @default 5432 */
  readonly primaryPort?: number;
  /** Host port of the first replica; replica n gets `replicaBasePort + n - 1`. @default 5433 */
  readonly replicaBasePort?: number;
  /**
   * Host port of the router's read-write endpoint (`connectionString`): always the current
   * primary. @default primaryPort - 2 (5430), so each cluster's ports stay in one range
   */
  readonly readWritePort?: number;
  /**
   * Host port of the router's read-only endpoint (`readOnlyConnectionString`): the standbys,
   * round-robin, or the primary while no standby is up. @default readWritePort + 1 (5431)
   */
  readonly readOnlyPort?: number;
  /**
   * Docker image of the router (HAProxy 2.6 or later, `haproxy` on PATH and bash): the official
   * `haproxy` image or the local `pg-cluster-haproxy:2.6` (scripts/provision-image.sh --local router).
   * @default "haproxy:2.6"
   */
  readonly routerImage?: string;
  /** Host address the ports are published on. @default "127.0.0.1" (never all interfaces by default) */
  readonly bindAddress?: string;
  /** Host name that endpoints and the post-step use to reach the published ports. @default "localhost" */
  readonly host?: string;
  /** Database created on the primary and seeded. @default "mydb" */
  readonly database?: string;
  /** Superuser role name. @default "postgres" */
  readonly superuser?: string;
  /** Superuser password; required, at least 8 characters, no line breaks. Always kept secret. */
  readonly superuserPassword: pulumi.Input<string>;
  /** Replication role name (REPLICATION LOGIN, not a superuser). @default "replicator" */
  readonly replicationUser?: string;
  /** Replication role password; required, at least 8 characters, no line breaks. Always kept secret. */
  readonly replicationPassword: pulumi.Input<string>;
  /**
   * Commits wait until this many replicas have flushed them (`ANY k` over the replicas).
   * @default 0 (asynchronous)
   * Whole number from 0 to `replicas`.
   */
  readonly synchronousReplicas?: number;
  /**
   * Most WAL a slot may hold back for a lagging replica before the primary invalidates the slot
   * (the replica then re-clones itself). Bounded, so a dead replica cannot fill the disk.
   * @default "1GB"
   */
  readonly maxSlotWalKeepSize?: string;
  /** WAL volume between checkpoints (`max_wal_size`) on every node. @default "1GB" */
  readonly maxWalSize?: string;
  /**
   * Seconds within which the primary must accept connections once the post-step starts, and that
   * a replica may go without progress (its clone or replay reaching a new high, so a long clone
   * of a large primary is waited out). @default 120
   */
  readonly verifyTimeoutSeconds?: number;
  /**
   * The node that is the primary: a node name as listed in the `nodes` output (its container's
   * name). Changing it moves the primary by a planned switchover, replacing no container; after
   * a lost primary, naming the most advanced replica promotes it.
   * @default `<name>-primary`, the node every cluster starts with as its primary
   */
  readonly primary?: string;
  /**
   * A switchover is refused while the candidate is further than this behind the primary (WAL
   * not yet replayed), so the write pause stays short. @default "16MB"
   */
  readonly switchoverMaxLag?: string;
  /**
   * An optional pgAdmin 4 web UI with every node registered (the seed tutorial's last step).
   * @default disabled
   */
  readonly pgadmin?: PgAdminArgs;
  /**
   * Docker hosts to place the nodes on (issue 11; docs/design/several-hosts.md). Without it every
   * node runs on the one engine of the docker provider in opts.
   * @default none
   */
  readonly hosts?: DockerHostArgs[];
  /**
   * The host of each node, node 0 first: names from `hosts`. Only with `hosts`.
   * @default round-robin over `hosts`, node 0 on the first
   */
  readonly placement?: string[];
  /**
   * TLS on every network connection: a CA and a certificate per node made by the program (kept
   * secret in state), `hostssl` rules only (plain connections refused, but for the router's
   * checks), replication and the steps on `sslmode=verify-full`, the CA certificate in the
   * `caCertificate` output. Turning it on or off rolls the nodes, without outage.
   * @default true
   */
  readonly tls?: boolean;
  /**
   * With `tls`: any new value re-issues every node's certificate now (a suspected key leak, say);
   * the CA stays. The topology step installs them and reloads: no container is replaced. The
   * certificates (valid 825 days) are also re-issued by the first up of every 365-day window.
   * @default ""
   */
  readonly tlsRenewal?: string;
  /**
   * Backups with pgBackRest (issue 12; docs/design/backups.md): WAL archived from whichever node
   * is primary into a repository volume, a full backup when the cluster is made, another at each
   * new `trigger`. Needs pgBackRest in the image (the local images have it). One host only, for
   * now. Turning it on rolls the nodes (`archive_mode` needs a restart), without outage.
   */
  readonly backup?: BackupArgs;
  /**
   * Make the new cluster from another cluster's pgBackRest repository instead of an empty one
   * (issue 12): its primary restores the latest backup before `targetTime` and recovers that
   * repository's WAL to `targetTime` (or to the end of its archive), then the replicas clone it.
   * Read when the cluster is made (no node holds data yet); the repository is mounted read-only.
   */
  readonly restore?: RestoreArgs;
}

/** Restore (`restore` in {@link PostgresClusterArgs}). */
export interface RestoreArgs {
  /**
   * The repository: a Docker volume (e.g. `<cluster>-backup` of the cluster backed up), or an
   * absolute path on the Docker host (that cluster's `backup.repositoryPath`). With `hosts`, on
   * the host of the new cluster's `primary` (it restores; the others clone it).
   */
  readonly repository: string;
  /** Its stanza (the backed-up cluster's name). @default the repository's only stanza */
  readonly stanza?: string;
  /**
   * Recover to this moment (ISO 8601 with a time zone, e.g. 2026-11-27T10:15:00Z).
   * @default the end of the repository's WAL archive
   */
  readonly targetTime?: string;
  /**
   * Or recover to this WAL location (an LSN such as 0/3000060, from `pg_current_wal_lsn()`), the
   * transactions that committed before it. Not with `targetTime`.
   */
  readonly targetLsn?: string;
}

/** Validated restore settings. */
export interface RestoreSettings {
  readonly repository: string;
  readonly stanza?: string;
  /** In the form pgBackRest and PostgreSQL both read: `YYYY-MM-DD HH:MM:SS.mmm+00`. */
  readonly targetTime?: string;
  /** Upper case, as pgBackRest prints LSNs. */
  readonly targetLsn?: string;
}

/** Backups (`backup` in {@link PostgresClusterArgs}). */
export interface BackupArgs {
  /** Archive WAL and take backups. @default false */
  readonly enabled?: boolean;
  /** Full backups kept (older ones, and the WAL only they need, are expired). @default 2 */
  readonly retentionFull?: number;
  /** Any new value takes a backup (of `type`) at that up. @default "" */
  readonly trigger?: string;
  /** The kind of backup a new `trigger` takes: full, diff or incr. @default "full" */
  readonly type?: string;
  /**
   * Compression of backups and archived WAL: lz4 (fast), zst (smaller), gz, or none. A change
   * rolls the nodes (their pgBackRest configuration). @default "lz4"
   */
  readonly compress?: string;
  /**
   * Where backups are read: prefer-standby (a streaming standby, through the primary's pgBackRest
   * TLS server for the backup's start and stop; the primary when there is none or TLS is off), or
   * primary. @default "prefer-standby"
   */
  readonly target?: string;
  /**
   * The repository in a directory of the Docker host (an absolute path, say a mounted NAS share)
   * instead of the volume `<cluster>-backup`. The nodes bind-mount it; its owner becomes the
   * image's postgres user. Kept by destroy, like the volume. With `hosts`, a directory of
   * `host`. @default the volume
   */
  readonly repositoryPath?: string;
  /**
   * With `hosts`: the host (a name from `hosts`) that holds the repository and runs its pgBackRest
   * TLS server, the container `<cluster>-repository`, which every node archives to and which
   * takes the backups. @default the first host
   */
  readonly host?: string;
  /**
   * With `hosts`: the port the repository's pgBackRest server is published at on its host's
   * address; node i's pgBackRest server (started for a backup only) is published at port + 1 + i
   * on its host's. @default 8432
   */
  readonly port?: number;
}

/** Validated, enabled backups. */
export interface BackupSettings {
  readonly retentionFull: number;
  readonly trigger: string;
  readonly type: "full" | "diff" | "incr";
  readonly compress: "lz4" | "zst" | "gz" | "none";
  readonly target: "prefer-standby" | "primary";
  /** Absolute, without a trailing slash; undefined: the volume `<cluster>-backup`. */
  readonly repositoryPath?: string;
  /** With `hosts`: the repository's host and its server's published port (node i's: port + 1 + i). */
  readonly repository?: { readonly host: string; readonly port: number };
}

/** A Docker host the cluster may place nodes on (`hosts` in {@link PostgresClusterArgs}). */
export interface DockerHostArgs {
  /** Its name in `placement` and in resource names: a-z, 0-9 and '-', starting with a letter, at most 20. */
  readonly name: string;
  /** Its engine, as the docker provider takes it: `unix:///…`, `tcp://host:port` or `ssh://user@host`. */
  readonly dockerHost: string;
  /** Where the other hosts and the clients reach the ports it publishes: an IPv4 address or a DNS name. */
  readonly address: string;
}

/** The optional pgAdmin 4 of a cluster (`pgadmin` in {@link PostgresClusterArgs}). */
export interface PgAdminArgs {
  /** Run pgAdmin. @default false */
  readonly enabled?: boolean;
  /** Host port of its web UI, published on `bindAddress`. @default primaryPort - 3 (5429) */
  readonly port?: number;
  /** Its login (an email address). @default "admin@example.com" */
  readonly email?: string;
  /** Its login password; required when enabled, at least 8 characters. Always kept secret. */
  readonly password?: pulumi.Input<string>;
  /**
   * Docker image with the environment contract of the official `dpage/pgadmin4` (README), such as
   * the local `pg-cluster-pgadmin:9.18` (scripts/provision-image.sh --local pgadmin).
   * @default "dpage/pgadmin4:9"
   */
  readonly image?: string;
}

/** A validated, enabled pgAdmin. */
export interface PgAdminSettings {
  readonly port: number;
  readonly email: string;
  readonly password: pulumi.Input<string>;
  readonly image: string;
}

/** Everything the cluster needs, validated, with defaults applied and derived values computed. */
export interface ClusterSettings {
  readonly replicas: number;
  readonly image: string;
  readonly primaryPort: number;
  readonly replicaPorts: readonly number[];
  readonly readWritePort: number;
  readonly readOnlyPort: number;
  readonly routerImage: string;
  readonly bindAddress: string;
  readonly host: string;
  readonly database: string;
  readonly superuser: string;
  readonly superuserPassword: pulumi.Input<string>;
  readonly replicationUser: string;
  readonly replicationPassword: pulumi.Input<string>;
  readonly synchronousReplicas: number;
  readonly maxSlotWalKeepSize: string;
  readonly maxWalSize: string;
  readonly verifyTimeoutSeconds: number;
  /** Node names, node 0 (`<name>-primary`) first; empty when validated without a name. */
  readonly nodeNames: readonly string[];
  /** The node that must be the primary (one of nodeNames). */
  readonly primary: string;
  readonly switchoverMaxLagBytes: number;
  readonly maxWalSenders: number;
  readonly maxReplicationSlots: number;
  /** pgAdmin, when enabled. */
  readonly pgadmin?: PgAdminSettings;
  readonly tls: boolean;
  readonly tlsRenewal: string;
  /** Backups, when enabled. */
  readonly backup?: BackupSettings;
  /** Where a new cluster is restored from, when it is. */
  readonly restore?: RestoreSettings;
  /** The Docker hosts, when given, and each node's host (by name), node 0 first. */
  readonly hosts?: {
    readonly list: readonly DockerHostArgs[];
    readonly placement: readonly string[];
  };
}

/** One problem with one field: what is wrong and how to fix it. */
export interface ConfigProblem {
  readonly field: string;
  readonly value: unknown;
  readonly problem: string;
  readonly fix: string;
}

/** Thrown with every problem found at once, before any resource is created. */
export class ClusterConfigError extends pulumi.RunError {
  constructor(readonly problems: readonly ConfigProblem[]) {
    super(
      `pg-cluster configuration is invalid (${problems.length} problem${problems.length === 1 ? "" : "s"}); nothing was created or changed:\n` +
        problems
          .map((p) => `  - ${p.field} = ${showValue(p.value)}: ${p.problem}. Fix: ${p.fix}`)
          .join("\n"),
    );
    this.name = "ClusterConfigError";
  }
}

/** Shown instead of a secret's value in error messages. */
export const EMPTY_SECRET = Symbol("(empty)");
/** Shown instead of a secret's value in error messages. */
export const HIDDEN_SECRET = Symbol("(secret, not shown)");

function showValue(value: unknown): string {
  if (value === undefined) return "(not set)";
  if (typeof value === "symbol") return value.description ?? "";
  // Lists and objects (hosts, placement) as JSON too: String(["h1"]) would read as "h1".
  if (typeof value === "string" || (typeof value === "object" && value !== null)) {
    return JSON.stringify(value);
  }
  return String(value);
}

const IDENTIFIER = /^[a-z_][a-z0-9_]{0,62}$/;
const WAL_SIZE = /^[1-9][0-9]*(kB|MB|GB|TB)$/;
const IPV4 =
  /^(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(\.(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3}$/;
const IPV6 = /^[0-9a-fA-F:]+$/;
const HOSTNAME = /^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$/;
const IMAGE = /^[A-Za-z0-9][A-Za-z0-9._/:@-]*$/;

/**
 * How many WAL senders and slots the nodes reserve. Sized in tiers of 8 replicas so that scaling
 * within a tier never changes the primary's settings (which would restart it): each replica needs
 * a slot and one sender to stream plus one more while it clones, with headroom for ad-hoc
 * pg_basebackup or pg_receivewal.
 */
export function replicationCapacity(replicas: number): {
  maxWalSenders: number;
  maxReplicationSlots: number;
} {
  const tier = Math.max(1, Math.ceil(replicas / 8)) * 8;
  return { maxWalSenders: 2 * tier + 4, maxReplicationSlots: tier + 4 };
}

/** A PostgreSQL size ("64MB", "1GB") in megabytes. */
function walSizeMB(size: string): number {
  const m = /^([0-9]+)(kB|MB|GB|TB)$/.exec(size);
  if (!m) return 0;
  return (
    Number(m[1]) *
    { kB: 1 / 1024, MB: 1, GB: 1024, TB: 1024 * 1024 }[m[2] as "kB" | "MB" | "GB" | "TB"]
  );
}

/**
 * Longest component name. Node names (`<name>-replica-16`) are the replicas' PostgreSQL
 * application names, which PostgreSQL cuts at 63 bytes, and `synchronous_standby_names` must
 * match them whole.
 */
export const MAX_CLUSTER_NAME_LENGTH = 63 - `-replica-${MAX_REPLICAS}`.length;

/** Checks the component's name, which names every Docker object and PostgreSQL node. */
export function checkClusterName(problems: ProblemList, name: string): void {
  const fix =
    "use a shorter stack name (index.ts names the cluster <project>-<stack>), or a shorter component name when embedding";
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(name)) {
    problems.add(
      "name",
      name,
      "must be a Docker name: letters, digits, '_', '.', '-', starting with a letter or digit",
      fix,
    );
  } else if (Buffer.byteLength(name) > MAX_CLUSTER_NAME_LENGTH) {
    problems.add(
      "name",
      name,
      `is ${Buffer.byteLength(name)} characters; at most ${MAX_CLUSTER_NAME_LENGTH} fit, because node names (<name>-replica-${MAX_REPLICAS}) are PostgreSQL application names, which are cut at 63 bytes`,
      fix,
    );
  }
}

/** Collects problems so that one error can report all of them. */
export class ProblemList {
  readonly problems: ConfigProblem[] = [];
  add(field: string, value: unknown, problem: string, fix: string): void {
    this.problems.push({ field, value, problem, fix });
  }
}

function checkInteger(
  problems: ProblemList,
  field: string,
  value: unknown,
  min: number,
  max: number,
  fix: string,
): value is number {
  if (typeof value !== "number" || !Number.isInteger(value)) {
    problems.add(field, value, "must be a whole number", fix);
    return false;
  }
  if (value < min || value > max) {
    problems.add(field, value, `must be between ${min} and ${max}`, fix);
    return false;
  }
  return true;
}

/** Checks one password; an Output is skipped (checked again by the component once resolved). */
export function checkPassword(
  problems: ProblemList,
  field: string,
  value: pulumi.Input<string> | undefined,
  configKey: string = field,
): void {
  const fix = `pulumi config set --secret ${configKey} <a password of 8+ characters>`;
  if (value === undefined || value === null) {
    problems.add(field, undefined, "is required", fix);
    return;
  }
  // An Output (a generated password, say) cannot be read before resources exist; the component
  // checks it again when it resolves.
  if (typeof value !== "string") return;
  if (value.length === 0) problems.add(field, EMPTY_SECRET, "must not be empty", fix);
  else if (value.length < 8)
    problems.add(field, HIDDEN_SECRET, "must be at least 8 characters", fix);
  else if (/[\r\n\0]/.test(value))
    problems.add(field, HIDDEN_SECRET, "must not contain line breaks or NUL", fix);
}

/**
 * Validates cluster arguments and applies defaults. Pure: reads nothing but its arguments.
 * Collects every problem (plus any `earlier` ones, e.g. from parsing stack config) and throws a
 * single {@link ClusterConfigError} naming each field, its value and the fix.
 */
export function validateClusterArgs(
  args: PostgresClusterArgs,
  earlier: ProblemList = new ProblemList(),
  clusterName?: string,
): ClusterSettings {
  const p = earlier;
  const failed = new Set(p.problems.map((x) => x.field));
  const replicas = args.replicas ?? DEFAULTS.replicas;
  const replicasOk =
    failed.has("replicas") ||
    checkInteger(
      p,
      "replicas",
      replicas,
      0,
      MAX_REPLICAS,
      `pulumi config set replicas <0..${MAX_REPLICAS}>`,
    );
  const count =
    replicasOk && typeof replicas === "number" && Number.isInteger(replicas) ? replicas : 0;

  const image = args.image ?? DEFAULTS.image;
  if (typeof image !== "string" || !IMAGE.test(image)) {
    p.add(
      "image",
      image,
      "is not a Docker image reference",
      "pulumi config set image postgres:16 (or a local image such as pg-cluster-postgres:15)",
    );
  }

  const primaryPort = args.primaryPort ?? DEFAULTS.primaryPort;
  const replicaBasePort = args.replicaBasePort ?? DEFAULTS.replicaBasePort;
  const primaryPortOk =
    failed.has("primaryPort") ||
    checkInteger(
      p,
      "primaryPort",
      primaryPort,
      1,
      65535,
      "pulumi config set primaryPort <1..65535>",
    );
  const basePortOk =
    failed.has("replicaBasePort") ||
    checkInteger(
      p,
      "replicaBasePort",
      replicaBasePort,
      1,
      65535 - count + 1,
      `pulumi config set replicaBasePort <1..${65535 - count + 1}>`,
    );
  const replicaPorts = Array.from({ length: count }, (_, i) => replicaBasePort + i);
  if (primaryPortOk === true && basePortOk === true && replicaPorts.includes(primaryPort)) {
    const n = replicaPorts.indexOf(primaryPort) + 1;
    p.add(
      "primaryPort",
      primaryPort,
      `the primary and replica ${n} would both publish host port ${primaryPort} (replicas use ${replicaPorts[0]}..${replicaPorts[count - 1]})`,
      `give the primary a port outside that range, or move the replicas with pulumi config set replicaBasePort ${primaryPort + 1}`,
    );
  }

  const routerPorts = checkRouterPorts(p, args, primaryPortOk === true ? primaryPort : undefined);
  if (primaryPortOk === true && basePortOk === true) {
    const nodePorts = [primaryPort, ...replicaPorts];
    for (const [field, port] of Object.entries(routerPorts)) {
      if (port === undefined || !nodePorts.includes(port)) continue;
      const node = nodePorts.indexOf(port);
      p.add(
        field,
        port,
        `${node === 0 ? "the primary" : `replica ${node}`} publishes host port ${port} too`,
        `pulumi config set ${field} <a port no node uses>` +
          (args[field as keyof typeof routerPorts] === undefined
            ? " (by default readWritePort = primaryPort - 2 and readOnlyPort = readWritePort + 1)"
            : ""),
      );
    }
  }
  const routerImage = args.routerImage ?? DEFAULTS.routerImage;
  if (typeof routerImage !== "string" || !IMAGE.test(routerImage)) {
    p.add(
      "routerImage",
      routerImage,
      "is not a Docker image reference",
      "pulumi config set routerImage haproxy:2.6 (or the local pg-cluster-haproxy:2.6)",
    );
  }

  const bindAddress = args.bindAddress ?? DEFAULTS.bindAddress;
  if (
    typeof bindAddress !== "string" ||
    !(IPV4.test(bindAddress) || (bindAddress.includes(":") && IPV6.test(bindAddress)))
  ) {
    p.add(
      "bindAddress",
      bindAddress,
      "is not an IP address",
      "pulumi config set bindAddress 127.0.0.1",
    );
  }
  const host = args.host ?? DEFAULTS.host;
  if (typeof host !== "string" || !(HOSTNAME.test(host) || IPV6.test(host))) {
    p.add("host", host, "is not a host name or address", "pulumi config set host localhost");
  }

  const names: [string, unknown][] = [
    ["database", args.database ?? DEFAULTS.database],
    ["superuser", args.superuser ?? DEFAULTS.superuser],
    ["replicationUser", args.replicationUser ?? DEFAULTS.replicationUser],
  ];
  for (const [field, value] of names) {
    if (typeof value !== "string" || !IDENTIFIER.test(value)) {
      p.add(
        field,
        value,
        "must be a lower-case SQL identifier (a-z, 0-9, _; not starting with a digit; at most 63)",
        `pulumi config set ${field} <name>`,
      );
    }
  }
  const superuser = String(names[1][1]);
  const replicationUser = String(names[2][1]);
  if (superuser === replicationUser) {
    p.add(
      "replicationUser",
      replicationUser,
      "must differ from the superuser: replication must not run as a superuser",
      "pulumi config set replicationUser replicator",
    );
  }

  checkPassword(p, "superuserPassword", args.superuserPassword);
  checkPassword(p, "replicationPassword", args.replicationPassword);

  const synchronousReplicas = args.synchronousReplicas ?? DEFAULTS.synchronousReplicas;
  if (!failed.has("synchronousReplicas")) {
    checkInteger(
      p,
      "synchronousReplicas",
      synchronousReplicas,
      0,
      count,
      `pulumi config set synchronousReplicas <0..${count}> (it cannot exceed replicas)`,
    );
  }

  const maxSlotWalKeepSize = args.maxSlotWalKeepSize ?? DEFAULTS.maxSlotWalKeepSize;
  if (typeof maxSlotWalKeepSize !== "string" || !WAL_SIZE.test(maxSlotWalKeepSize)) {
    p.add(
      "maxSlotWalKeepSize",
      maxSlotWalKeepSize,
      "must be a positive size with a unit (kB, MB, GB, TB); unlimited is not allowed",
      "pulumi config set maxSlotWalKeepSize 1GB",
    );
  }

  const maxWalSize = args.maxWalSize ?? DEFAULTS.maxWalSize;
  if (typeof maxWalSize !== "string" || !WAL_SIZE.test(maxWalSize) || walSizeMB(maxWalSize) < 64) {
    p.add(
      "maxWalSize",
      maxWalSize,
      "must be a size with a unit (kB, MB, GB, TB) of at least 64MB",
      "pulumi config set maxWalSize 1GB",
    );
  }

  const verifyTimeoutSeconds = args.verifyTimeoutSeconds ?? DEFAULTS.verifyTimeoutSeconds;
  if (!failed.has("verifyTimeoutSeconds")) {
    checkInteger(
      p,
      "verifyTimeoutSeconds",
      verifyTimeoutSeconds,
      5,
      3600,
      "pulumi config set verifyTimeoutSeconds 120",
    );
  }

  const switchoverMaxLag = args.switchoverMaxLag ?? DEFAULTS.switchoverMaxLag;
  if (typeof switchoverMaxLag !== "string" || !WAL_SIZE.test(switchoverMaxLag)) {
    p.add(
      "switchoverMaxLag",
      switchoverMaxLag,
      "must be a positive size with a unit (kB, MB, GB, TB)",
      "pulumi config set switchoverMaxLag 16MB",
    );
  }

  const pgadmin = checkPgAdmin(
    p,
    args.pgadmin,
    primaryPortOk === true ? primaryPort : undefined,
    primaryPortOk === true && basePortOk === true
      ? [primaryPort, ...replicaPorts, ...Object.values(routerPorts)]
      : [],
  );

  const hosts = checkHosts(
    p,
    args.hosts,
    args.placement,
    failed.has("replicas") ? undefined : count + 1,
  );
  if (args.hosts !== undefined && pgadmin) {
    // Its servers would have to be registered by the other hosts' addresses: not built yet.
    p.add(
      "pgadmin",
      args.pgadmin,
      "is not available with hosts yet (pgAdmin reaches nodes by name on one host's network)",
      "pulumi config set pgadmin false, or remove hosts",
    );
  }

  const tls = args.tls ?? DEFAULTS.tls;
  if (typeof tls !== "boolean") {
    p.add("tls", tls, "must be true or false", "pulumi config set tls true");
  }

  const tlsRenewal = args.tlsRenewal ?? DEFAULTS.tlsRenewal;
  checkTriggerWord(
    p,
    "tlsRenewal",
    tlsRenewal,
    "re-issues the certificates",
    "pulumi config set tlsRenewal 2026-11-27",
  );

  const backup = checkBackup(
    p,
    args.backup,
    args.hosts === undefined
      ? undefined
      : {
          names: hosts?.list.map((h) => h.name) ?? [],
          tls,
          nodes: failed.has("replicas") ? undefined : count + 1,
          usedPorts:
            primaryPortOk === true && basePortOk === true
              ? [primaryPort, ...replicaPorts, ...Object.values(routerPorts)]
              : [],
        },
  );
  const ownRepository = backup?.repositoryPath ?? (clusterName && `${clusterName}-backup`);
  const restore = checkRestore(p, args.restore, ownRepository);

  const nodeNames = clusterName === undefined ? [] : clusterNodeNames(clusterName, count);
  const primary = args.primary ?? nodeNames[0] ?? "";
  if (clusterName !== undefined) {
    checkClusterName(p, clusterName);
    checkPrimary(p, clusterName, args.primary, count);
  }

  if (p.problems.length > 0) throw new ClusterConfigError(p.problems);
  return {
    replicas: count,
    image: image as string,
    primaryPort,
    replicaPorts,
    readWritePort: routerPorts.readWritePort ?? 0,
    readOnlyPort: routerPorts.readOnlyPort ?? 0,
    routerImage: routerImage as string,
    bindAddress,
    host,
    database: String(names[0][1]),
    superuser,
    superuserPassword: args.superuserPassword,
    replicationUser,
    replicationPassword: args.replicationPassword,
    synchronousReplicas,
    maxSlotWalKeepSize,
    maxWalSize,
    verifyTimeoutSeconds,
    nodeNames,
    primary,
    switchoverMaxLagBytes: Math.round(walSizeMB(switchoverMaxLag) * 1024 * 1024),
    ...replicationCapacity(count),
    tls: tls === true,
    tlsRenewal: tlsRenewal as string,
    ...(backup ? { backup } : {}),
    ...(restore ? { restore } : {}),
    ...(pgadmin ? { pgadmin } : {}),
    ...(hosts ? { hosts } : {}),
  };
}

const HOST_NAME = /^[a-z][a-z0-9-]{0,19}$/;
const DOCKER_HOST = /^(unix:\/\/\/\S+|tcp:\/\/[^\s/]+:\d+\/?|ssh:\/\/[^\s/]+)$/;

/**
 * The hosts and each node's host (round-robin unless `placement` says), or undefined without
 * `hosts`. `nodes` is the node count (undefined when replicas is invalid: placement's length is
 * then not checked).
 */
function checkHosts(
  p: ProblemList,
  hosts: readonly DockerHostArgs[] | undefined,
  placement: readonly string[] | undefined,
  nodes: number | undefined,
): ClusterSettings["hosts"] {
  if (hosts === undefined) {
    if (placement !== undefined) {
      p.add(
        "placement",
        placement,
        "needs hosts",
        "name the Docker hosts first: pulumi config set --path 'hosts[0].name' h1 (and dockerHost, address), or remove placement",
      );
    }
    return undefined;
  }
  const hostFix =
    "pulumi config set --path 'hosts[0].name' h1; --path 'hosts[0].dockerHost' unix:///var/run/docker.sock; --path 'hosts[0].address' 10.0.0.1";
  if (!Array.isArray(hosts) || hosts.length === 0) {
    p.add("hosts", hosts, "must be a list of at least one { name, dockerHost, address }", hostFix);
    return undefined;
  }
  const names = new Set<string>();
  const addresses = new Set<string>();
  hosts.forEach((h, i) => {
    const at = `hosts[${i}]`;
    if (typeof h !== "object" || h === null) {
      p.add(at, h, "must be { name, dockerHost, address }", hostFix);
      return;
    }
    if (typeof h.name !== "string" || !HOST_NAME.test(h.name)) {
      p.add(
        `${at}.name`,
        h.name,
        "must be 1-20 of a-z, 0-9 and '-', starting with a letter",
        `pulumi config set --path '${at}.name' h${i + 1}`,
      );
    } else if (names.has(h.name)) {
      p.add(
        `${at}.name`,
        h.name,
        "is the name of an earlier host",
        `give each host its own name: pulumi config set --path '${at}.name' h${i + 1}`,
      );
    } else names.add(h.name);
    if (typeof h.dockerHost !== "string" || !DOCKER_HOST.test(h.dockerHost)) {
      p.add(
        `${at}.dockerHost`,
        h.dockerHost,
        "must be unix:///path, tcp://host:port or ssh://[user@]host",
        `pulumi config set --path '${at}.dockerHost' ssh://admin@10.0.0.${i + 1}`,
      );
    }
    if (typeof h.address !== "string" || !(IPV4.test(h.address) || HOSTNAME.test(h.address))) {
      p.add(
        `${at}.address`,
        h.address,
        "must be an IPv4 address or a DNS name (no scheme, no port) where the other hosts reach this one",
        `pulumi config set --path '${at}.address' 10.0.0.${i + 1}`,
      );
    } else if (addresses.has(h.address)) {
      p.add(
        `${at}.address`,
        h.address,
        "is the address of an earlier host",
        "give each host the address it is reached at",
      );
    } else addresses.add(h.address);
  });
  const list = hosts.filter((h) => typeof h === "object" && h !== null);
  if (placement === undefined) {
    if (nodes === undefined || names.size !== hosts.length) return undefined;
    return {
      list,
      placement: Array.from({ length: nodes }, (_, i) => hosts[i % hosts.length].name),
    };
  }
  const placeFix = `a host name per node, node 0 first: pulumi config set --path 'placement[0]' ${[...names][0] ?? "h1"}`;
  if (!Array.isArray(placement)) {
    p.add("placement", placement, "must be a list of host names", placeFix);
    return undefined;
  }
  if (nodes !== undefined && placement.length !== nodes) {
    p.add(
      "placement",
      placement,
      `must name a host for each of the ${nodes} nodes (1 + replicas), not ${placement.length}`,
      placeFix,
    );
  }
  placement.forEach((name, i) => {
    if (!names.has(name)) {
      p.add(
        `placement[${i}]`,
        name,
        `is not a host (hosts: ${[...names].join(", ") || "none valid"})`,
        placeFix,
      );
    }
  });
  return { list, placement: [...placement] };
}

/**
 * pgAdmin's settings when enabled (undefined when not): a port no node or router endpoint
 * publishes, a login address and a password, an image reference.
 */
/**
 * A value whose every change sets something off (`tlsRenewal`, `backup.trigger`): one word of at
 * most 64 characters, `does` saying what a new value does.
 */
function checkTriggerWord(
  p: ProblemList,
  field: string,
  value: unknown,
  does: string,
  fix: string,
) {
  if (typeof value !== "string" || value.length > 64 || /\s/.test(value)) {
    p.add(field, value, `must be a word of at most 64 characters (any new value ${does})`, fix);
  }
}

/** Checks `backup`; undefined when backups are off. */
function checkBackup(
  p: ProblemList,
  args: BackupArgs | undefined,
  hosts: BackupHosts | undefined,
): BackupSettings | undefined {
  if (args === undefined || args.enabled === undefined || args.enabled === false) return undefined;
  if (args.enabled !== true) {
    p.add("backup.enabled", args.enabled, "must be true or false", "pulumi config set backup true");
    return undefined;
  }
  const retentionFull = args.retentionFull ?? 2;
  checkInteger(
    p,
    "backup.retentionFull",
    retentionFull,
    1,
    100,
    "pulumi config set backupRetentionFull 2",
  );
  const trigger = args.trigger ?? "";
  checkTriggerWord(
    p,
    "backup.trigger",
    trigger,
    "takes a backup",
    "pulumi config set backupTrigger 2026-11-27T10:00",
  );
  const type = args.type ?? "full";
  if (type !== "full" && type !== "diff" && type !== "incr") {
    p.add("backup.type", type, "must be full, diff or incr", "pulumi config set backupType full");
  }
  const compress = args.compress ?? "lz4";
  if (!["lz4", "zst", "gz", "none"].includes(compress as string)) {
    p.add(
      "backup.compress",
      compress,
      "must be lz4, zst, gz or none",
      "pulumi config set backupCompress lz4",
    );
  }
  const target = args.target ?? "prefer-standby";
  if (target !== "prefer-standby" && target !== "primary") {
    p.add(
      "backup.target",
      target,
      "must be prefer-standby or primary",
      "pulumi config set backupTarget prefer-standby",
    );
  }
  const repositoryPath = args.repositoryPath;
  if (repositoryPath !== undefined && hostPath(repositoryPath) === undefined) {
    p.add(
      "backup.repositoryPath",
      repositoryPath,
      "must be an absolute path on the Docker host, other than /, without .., : or ,",
      "pulumi config set backupRepositoryPath /srv/pgbackrest/<cluster>, or pulumi config rm backupRepositoryPath for the volume",
    );
  }
  const repository = checkRepositoryHost(p, args, hosts);
  return {
    retentionFull: retentionFull as number,
    trigger: trigger as string,
    type: type as BackupSettings["type"],
    compress: compress as BackupSettings["compress"],
    target: target as BackupSettings["target"],
    ...(repositoryPath !== undefined ? { repositoryPath: hostPath(repositoryPath) } : {}),
    ...(repository ? { repository } : {}),
  };
}

/** What {@link checkBackup} needs to know of `hosts`: undefined without them. */
interface BackupHosts {
  /** The hosts' names, in order. */
  readonly names: readonly string[];
  readonly tls: unknown;
  /** The node count (undefined when replicas is invalid). */
  readonly nodes: number | undefined;
  /** The nodes' and the router's ports (published on every host, as far as backups care). */
  readonly usedPorts: readonly number[];
}

/** The default of `backup.port`: pgBackRest's own default TLS server port. */
const BACKUP_PORT = 8432;

/**
 * With `hosts`, where the repository lives (`backup.host`) and the ports its server and the nodes'
 * backup servers are published at (`backup.port` ... + nodes); without, neither may be set.
 */
function checkRepositoryHost(
  p: ProblemList,
  args: BackupArgs,
  hosts: BackupHosts | undefined,
): BackupSettings["repository"] {
  if (hosts === undefined) {
    for (const key of ["host", "port"] as const) {
      if (args[key] !== undefined) {
        p.add(
          `backup.${key}`,
          args[key],
          "is only for clusters with hosts (the repository is then on one of them)",
          `pulumi config rm backup${key === "host" ? "Host" : "Port"}`,
        );
      }
    }
    return undefined;
  }
  if (hosts.tls !== true) {
    p.add(
      "backup",
      true,
      "with hosts needs tls (the nodes reach the repository's pgBackRest server through TLS, with the cluster's certificates)",
      "pulumi config set tls true, or pulumi config set backup false",
    );
  }
  const host = args.host ?? hosts.names[0];
  if (hosts.names.length > 0 && !hosts.names.includes(host)) {
    p.add(
      "backup.host",
      host,
      `is not a host (hosts: ${hosts.names.join(", ")})`,
      `pulumi config set backupHost ${hosts.names[0]}`,
    );
  }
  const port = args.port ?? BACKUP_PORT;
  const nodes = hosts.nodes ?? 1;
  const fix = `pulumi config set backupPort ${BACKUP_PORT}, or another port with ${nodes} free after it`;
  if (checkInteger(p, "backup.port", port, 1024, 65535 - nodes, fix)) {
    const mine = Array.from({ length: nodes + 1 }, (_, i) => (port as number) + i);
    const taken = mine.filter((x) => hosts.usedPorts.includes(x));
    if (taken.length > 0) {
      p.add(
        "backup.port",
        port,
        `publishes the repository at it and node i's backup server at port + 1 + i (${mine[0]}-${mine.at(-1)}), but ${taken.join(", ")} ${taken.length > 1 ? "are" : "is"} the cluster's already`,
        fix,
      );
    }
  }
  return { host, port: port as number };
}

/** A repository named by an absolute path is a directory of the Docker host; otherwise a volume. */
export const isHostPath = (repository: string): boolean => repository.startsWith("/");

/**
 * `value` as a bind mount's source: an absolute path, other than /, with no `..` step and none of
 * the characters Docker's mount syntax splits on; without its trailing slash. Undefined if not.
 */
export function hostPath(value: unknown): string | undefined {
  if (typeof value !== "string" || !isHostPath(value) || /[:,\0\n]/.test(value)) {
    return undefined;
  }
  const trimmed = value.replace(/\/+$/, "");
  if (trimmed === "" || trimmed.split("/").includes("..")) return undefined;
  return trimmed;
}

const VOLUME_NAME = /^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$/;
const STANZA_NAME = /^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}$/;

/** Checks `restore`; undefined when the cluster is not restored. */
function checkRestore(
  p: ProblemList,
  args: RestoreArgs | undefined,
  ownRepository: string | undefined,
): RestoreSettings | undefined {
  if (args === undefined || (args.repository ?? "") === "") {
    if (
      args !== undefined &&
      (args.stanza !== undefined || args.targetTime !== undefined || args.targetLsn !== undefined)
    ) {
      p.add(
        "restore.repository",
        args.repository,
        "must name the repository (a Docker volume or a host path) when restore.stanza or a restore target is set",
        "pulumi config set restoreRepository <cluster>-backup",
      );
    }
    return undefined;
  }
  const { stanza, targetTime, targetLsn } = args;
  const repository =
    typeof args.repository === "string" && isHostPath(args.repository)
      ? hostPath(args.repository)
      : args.repository;
  if (typeof repository !== "string" || !(VOLUME_NAME.test(repository) || hostPath(repository))) {
    p.add(
      "restore.repository",
      args.repository,
      "must be a Docker volume name or an absolute path on the Docker host (without .., : or ,)",
      "pulumi config set restoreRepository <cluster>-backup (docker volume ls --filter label=pg-cluster.backup-of)",
    );
  } else if (repository === ownRepository) {
    // This cluster's own repository: restoring from it would archive into it.
    p.add(
      "restore.repository",
      args.repository,
      "is this cluster's own repository; a cluster is restored from another cluster's",
      isHostPath(repository)
        ? "give this cluster a repository of its own: pulumi config set backupRepositoryPath <another directory>"
        : "restore into a new stack or component with another name",
    );
  }
  if (stanza !== undefined && (typeof stanza !== "string" || !STANZA_NAME.test(stanza))) {
    p.add(
      "restore.stanza",
      stanza,
      "must be a pgBackRest stanza name (letters, digits, . _ -)",
      "pulumi config set restoreStanza <the backed-up cluster's name>",
    );
  }
  const target = targetTime === undefined ? undefined : pgTimestamp(targetTime);
  if (targetTime !== undefined) {
    if (target === undefined) {
      p.add(
        "restore.targetTime",
        targetTime,
        "must be an ISO 8601 time with a time zone",
        "pulumi config set restoreTargetTime 2026-11-27T10:15:00Z",
      );
    } else if (Date.parse(targetTime as string) > Date.now()) {
      p.add(
        "restore.targetTime",
        targetTime,
        "is in the future; a repository holds nothing after now",
        "omit it to restore to the end of the archive (pulumi config rm restoreTargetTime)",
      );
    }
  }
  const lsn =
    typeof targetLsn === "string" && /^[0-9A-F]{1,8}\/[0-9A-F]{1,8}$/i.test(targetLsn)
      ? targetLsn.toUpperCase()
      : undefined;
  if (targetLsn !== undefined && lsn === undefined) {
    p.add(
      "restore.targetLsn",
      targetLsn,
      "must be a WAL location such as 0/3000060 (SELECT pg_current_wal_lsn())",
      "pulumi config set restoreTargetLsn 0/3000060",
    );
  } else if (targetLsn !== undefined && targetTime !== undefined) {
    p.add(
      "restore.targetLsn",
      targetLsn,
      "cannot be given with restore.targetTime: a restore stops at one target",
      "pulumi config rm restoreTargetTime, or pulumi config rm restoreTargetLsn",
    );
  }
  return {
    repository: repository as string,
    ...(stanza !== undefined ? { stanza } : {}),
    ...(target !== undefined ? { targetTime: target } : {}),
    ...(lsn !== undefined ? { targetLsn: lsn } : {}),
  };
}

/**
 * An ISO 8601 time with a zone (Z or ±hh:mm) as `YYYY-MM-DD HH:MM:SS.mmm+00` (UTC), which
 * pgBackRest parses to pick the backup and PostgreSQL as recovery_target_time; undefined if it is
 * not one.
 */
export function pgTimestamp(value: unknown): string | undefined {
  const iso = /^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}(:?\d{2})?)$/;
  if (typeof value !== "string" || !iso.test(value)) return undefined;
  const ms = Date.parse(value.replace(" ", "T"));
  if (Number.isNaN(ms)) return undefined;
  return new Date(ms).toISOString().replace("T", " ").replace("Z", "+00");
}

function checkPgAdmin(
  p: ProblemList,
  args: PgAdminArgs | undefined,
  primaryPort: number | undefined,
  taken: readonly (number | undefined)[],
): PgAdminSettings | undefined {
  if (args === undefined || args.enabled === undefined || args.enabled === false) return undefined;
  if (args.enabled !== true) {
    p.add(
      "pgadmin.enabled",
      args.enabled,
      "must be true or false",
      "pulumi config set pgadmin true",
    );
    return undefined;
  }
  const port = args.port ?? (primaryPort === undefined ? undefined : primaryPort - 3);
  if (port !== undefined) {
    const fix =
      args.port === undefined
        ? "it defaults to primaryPort - 3; pulumi config set pgadminPort <1..65535>"
        : "pulumi config set pgadminPort <1..65535>";
    if (checkInteger(p, "pgadmin.port", port, 1, 65535, fix) && taken.includes(port)) {
      p.add(
        "pgadmin.port",
        port,
        "a node or the router publishes this host port too",
        "pulumi config set pgadminPort <a port no node or router endpoint uses>",
      );
    }
  }
  const email = args.email ?? PGADMIN_DEFAULTS.email;
  if (typeof email !== "string" || !/^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$/.test(email)) {
    p.add(
      "pgadmin.email",
      email,
      "is not an email address (pgAdmin's login is one)",
      "pulumi config set pgadminEmail admin@example.com",
    );
  }
  if (args.password === undefined) {
    p.add(
      "pgadmin.password",
      undefined,
      "is required when pgAdmin is enabled (it has no default password)",
      "pulumi config set --secret pgadminPassword <a password of 8+ characters> (npm run up generates one)",
    );
  } else {
    checkPassword(p, "pgadmin.password", args.password, "pgadminPassword");
  }
  const image = args.image ?? PGADMIN_DEFAULTS.image;
  if (typeof image !== "string" || !IMAGE.test(image)) {
    p.add(
      "pgadmin.image",
      image,
      "is not a Docker image reference",
      "pulumi config set pgadminImage dpage/pgadmin4:9 (or the local pg-cluster-pgadmin:9.18)",
    );
  }
  return {
    port: port ?? 0,
    email: String(email),
    password: args.password ?? "",
    image: String(image),
  };
}

/** A cluster's node names: node 0 (`<name>-primary`, the first primary), then the replicas. */
export function clusterNodeNames(clusterName: string, replicas: number): string[] {
  return [
    `${clusterName}-primary`,
    ...Array.from({ length: replicas }, (_, i) => `${clusterName}-replica-${i + 1}`),
  ];
}

/** `primary` must name a node that exists after this change. */
function checkPrimary(
  p: ProblemList,
  clusterName: string,
  primary: string | undefined,
  replicas: number,
): void {
  if (primary === undefined) return;
  const names = clusterNodeNames(clusterName, replicas);
  if (names.includes(primary)) return;
  const removed = clusterNodeNames(clusterName, MAX_REPLICAS).includes(primary);
  p.add(
    "primary",
    primary,
    removed
      ? `is a node that replicas = ${replicas} would remove`
      : "is not a node of this cluster",
    removed
      ? `move the primary first (pulumi config set primary ${names[0]}, pulumi up), then scale down`
      : `pulumi config set primary <one of: ${names.join(", ")}>`,
  );
}

/**
 * The router's two host ports: given, or next below the primary's port (primaryPort - 2 and - 1,
 * so two clusters given different primaryPorts never collide). Undefined where invalid.
 */
function checkRouterPorts(
  p: ProblemList,
  args: PostgresClusterArgs,
  primaryPort: number | undefined,
): { readWritePort?: number; readOnlyPort?: number } {
  const rw = args.readWritePort ?? (primaryPort === undefined ? undefined : primaryPort - 2);
  const rwOk =
    rw !== undefined &&
    checkInteger(
      p,
      "readWritePort",
      rw,
      1,
      65534,
      args.readWritePort === undefined
        ? `it defaults to primaryPort - 2; pulumi config set readWritePort <1..65534>`
        : "pulumi config set readWritePort <1..65534>",
    );
  const ro = args.readOnlyPort ?? (rwOk ? rw + 1 : undefined);
  const roOk =
    ro !== undefined &&
    checkInteger(p, "readOnlyPort", ro, 1, 65535, "pulumi config set readOnlyPort <1..65535>");
  if (rwOk && roOk && rw === ro) {
    p.add(
      "readOnlyPort",
      ro,
      "is the read-write endpoint's port too",
      `pulumi config set readOnlyPort ${rw + 1}`,
    );
    return { readWritePort: rw };
  }
  return { readWritePort: rwOk ? rw : undefined, readOnlyPort: roOk ? ro : undefined };
}
