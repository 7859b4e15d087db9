import * as crypto from "crypto";
import * as docker from "@pulumi/docker";
import * as pulumi from "@pulumi/pulumi";
import {
  CONTAINER_ASSETS_DIR,
  CONTAINER_PORT,
  CONTAINER_VOLUME_DIR,
  containerUploads,
  entrypoint,
  nodeBundle,
} from "./assets";
import { clusterContainerArgs, inheritedDependsOn } from "./options";
import { isHostPath } from "./settings";

/** Arguments of a {@link PostgresNode}. */
export interface PostgresNodeArgs {
  /**
   * The role the node was created for (`primary` for node 0, else `replica`): a label on its
   * volume only, kept as clusters made before roles could change labelled it.
   */
  readonly firstRole: "primary" | "replica";
  /** Physical name of the container (also its host name on the cluster network). */
  readonly nodeName: string;
  /** Label value grouping the cluster's Docker objects. */
  readonly clusterName: string;
  /** Docker image. */
  readonly image: string;
  /** Name of the cluster's Docker network. */
  readonly networkName: pulumi.Input<string>;
  /** Host port published for this node. */
  readonly hostPort: number;
  /** Host address the port is published on. */
  readonly bindAddress: string;
  /** Environment for the entrypoint (`KEY=value`); no password (those are in `secrets`). */
  readonly envs: pulumi.Input<string[]>;
  /** The node's passwords file ({@link secretsFile}); uploaded 0600, kept secret. */
  readonly secrets: pulumi.Input<string>;
  /**
   * With backups: the repository (a volume name, or an absolute path on the Docker host), mounted
   * at {@link CONTAINER_BACKUP_DIR}.
   */
  readonly backupRepository?: pulumi.Input<string>;
  /**
   * With `restore`: the other cluster's repository (a volume or a host path), mounted read-only
   * at {@link CONTAINER_RESTORE_DIR} (a restore never writes into it).
   */
  readonly restoreRepository?: string;
  /**
   * With backups across hosts: the host port its pgBackRest server (ctl.sh backup-serve, for one
   * backup at a time) is published at, for the repository's container on another host.
   */
  readonly backupServerPort?: number;
  /**
   * What the container must come after (a replica node: its slot's lifetime). On the container
   * only, not the component: the SDK registers a component's children after the component's own
   * dependencies, which would hold back the volume too. @default []
   */
  readonly startAfter?: pulumi.Input<pulumi.Resource>[];
}

/**
 * One PostgreSQL server: a named volume and a container that runs the node entrypoint from
 * `assets/`. The container resource is done once the container runs, not once the server is
 * ready: the provider polls health only once a second, which made every stage of an up wait for
 * the next tick. Readiness is awaited by what needs it: a replica's entrypoint waits for the
 * primary, and the cluster's post-step waits for every node (and fails if one never gets there).
 */
export class PostgresNode extends pulumi.ComponentResource {
  /** The node's data volume. Kept when the container is replaced. */
  public readonly volume: docker.Volume;
  /** The node's container. */
  public readonly container: docker.Container;
  /** Physical container name. */
  public readonly nodeName: string;
  /** Host port published for the node. */
  public readonly hostPort: number;

  constructor(name: string, args: PostgresNodeArgs, opts?: pulumi.ComponentResourceOptions) {
    super("pg-cluster:index:PostgresNode", name, {}, opts);
    this.nodeName = args.nodeName;
    this.hostPort = args.hostPort;
    // No role label on the container: a node's role changes (switchover) without its container
    // changing. The volume keeps the labels it was made with: a volume's labels are part of its
    // identity for the provider, and changing them would replace it, with its data.
    const volumeLabels = [
      { label: "pg-cluster.cluster", value: args.clusterName },
      { label: "pg-cluster.role", value: args.firstRole },
    ];

    this.volume = new docker.Volume(
      `${name}-data`,
      { name: `${args.nodeName}-data`, labels: volumeLabels },
      // Needs nothing but Docker (and what the user's dependsOn names): made at the start of an
      // up, in parallel with everything else, rather than after what the container must wait for.
      { parent: this, dependsOn: inheritedDependsOn(opts) },
    );

    this.container = new docker.Container(
      name,
      {
        ...clusterContainerArgs({
          containerName: args.nodeName,
          clusterName: args.clusterName,
          networkName: args.networkName,
          bindAddress: args.bindAddress,
          ports: [
            [CONTAINER_PORT, args.hostPort],
            ...(args.backupServerPort
              ? [[BACKUP_SERVER_PORT, args.backupServerPort] as const]
              : []),
          ],
        }),
        image: args.image,
        entrypoints: entrypoint(),
        envs: containerEnv(args),
        uploads: containerUploads(args.secrets),
        volumes: [
          { volumeName: this.volume.name, containerPath: CONTAINER_VOLUME_DIR },
          ...(args.backupRepository
            ? [repositoryMount(args.backupRepository, CONTAINER_BACKUP_DIR, false)]
            : []),
          ...(args.restoreRepository
            ? [repositoryMount(args.restoreRepository, CONTAINER_RESTORE_DIR, true)]
            : []),
        ],
        // For `docker ps` and monitoring; nothing in `pulumi up` waits on it (see the class comment).
        // Every 10 s: each check is a `docker exec` costing about 60 ms of CPU (measured: six
        // containers checked every 2 s kept 0.19 of a core busy), so every 2 s cost a busy
        // machine a quarter of its CPU across a test run's nodes.
        healthcheck: {
          tests: ["CMD", "bash", `${CONTAINER_ASSETS_DIR}/healthcheck.sh`],
          interval: "10s",
          timeout: "3s",
          retries: 3,
        },
        // SIGINT is PostgreSQL's fast shutdown: clean, without waiting for clients to leave.
        stopSignal: "SIGINT",
        destroyGraceSeconds: 60,
        shmSize: 256,
      },
      {
        parent: this,
        dependsOn: [...inheritedDependsOn(opts), ...(args.startAfter ?? []), this.volume],
        // The name is fixed, so the old container must go before the new one can exist; said
        // here rather than left to the provider. The roll gates (startAfter) order replacements.
        deleteBeforeReplace: true,
      },
    );

    this.registerOutputs({ volume: this.volume, container: this.container });
  }
}

/**
 * A repository's mount: a host path (it starts with /) bound, else the named volume.
 * @param readOnly a restore's source: never written
 */
export function repositoryMount(
  source: pulumi.Input<string>,
  containerPath: string,
  readOnly: boolean,
): pulumi.Output<docker.types.input.ContainerVolume> {
  return pulumi.output(source).apply((from) => ({
    ...(isHostPath(from) ? { hostPath: from } : { volumeName: from }),
    containerPath,
    ...(readOnly ? { readOnly } : {}),
  }));
}

/** Where a node's pgBackRest server listens, started for a backup (ctl.sh backup-serve). */
export const BACKUP_SERVER_PORT = 8432;

/** Where a node sees the backup repository's volume (lib.sh PGC_BACKUP_REPO). */
export const CONTAINER_BACKUP_DIR = "/var/lib/pgbackrest";

/** Where a node sees the repository it is restored from (ctl.sh PGC_RESTORE_REPO). */
export const CONTAINER_RESTORE_DIR = "/var/lib/pgbackrest-restore";

/**
 * The environment a node's container runs with: `envs` and `PGC_SPEC`, a digest of what else
 * the container is made of (its assets, its published address, its passwords file). A change to
 * any of it replaces the container, so a roll gate tells from the environment alone whether an
 * up will replace it. The passwords enter the digest through scrypt, salted with the node's
 * name: `docker inspect` shows the digest, and a fast hash would let a guess be checked cheaply.
 * Secret all the same (derived from passwords).
 */
export function containerEnv(
  args: Pick<
    PostgresNodeArgs,
    "nodeName" | "envs" | "secrets" | "hostPort" | "bindAddress" | "backupServerPort"
  >,
): pulumi.Output<string[]> {
  return pulumi.secret(
    pulumi.all([args.envs, args.secrets]).apply(([envs, secrets]) => {
      const spec = JSON.stringify({
        bundle: nodeBundle(),
        hostPort: args.hostPort,
        bindAddress: args.bindAddress,
        secrets: slowDigest(secrets, args.nodeName),
        // Only when published: the digest of every other node stays what it was.
        ...(args.backupServerPort ? { backupServerPort: args.backupServerPort } : {}),
      });
      const digest = crypto.createHash("sha256").update(spec).digest("hex").slice(0, 16);
      return [...envs, `PGC_SPEC=${digest}`];
    }),
  );
}

const slowDigests = new Map<string, string>();

/** scrypt of `secret` (Node's default cost: about 50 ms and 16 MiB), computed once per run. */
function slowDigest(secret: string, salt: string): string {
  const key = JSON.stringify([secret, salt]);
  let digest = slowDigests.get(key);
  if (digest === undefined) {
    digest = crypto.scryptSync(secret, `pg-cluster:${salt}`, 16).toString("hex");
    slowDigests.set(key, digest);
  }
  return digest;
}
