import * as docker from "@pulumi/docker";
import * as pulumi from "@pulumi/pulumi";
import {
  CONTAINER_ASSETS_DIR,
  CONTAINER_PORT,
  CONTAINER_VOLUME_DIR,
  NodeRole,
  containerUploads,
  entrypoint,
} from "./assets";
import { inheritedDependsOn } from "./options";

/** How long `pulumi up` waits for a node's health check before failing. */
const HEALTH_WAIT_SECONDS = { primary: 120, replica: 900 } as const;

/** Arguments of a {@link PostgresNode}. */
export interface PostgresNodeArgs {
  /** `primary` or `replica`: which entrypoint runs. */
  readonly role: NodeRole;
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
  /** Environment for the entrypoint (`KEY=value`); secret, since it carries passwords. */
  readonly envs: pulumi.Input<string[]>;
}

/**
 * One PostgreSQL server: a named volume and a container that runs the role's entrypoint from
 * `assets/`, with a fast health check so `pulumi up` (and anything that depends on the node)
 * waits until the server accepts TCP connections.
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
    const labels = [
      { label: "pg-cluster.cluster", value: args.clusterName },
      { label: "pg-cluster.role", value: args.role },
    ];

    this.volume = new docker.Volume(
      `${name}-data`,
      { name: `${args.nodeName}-data`, labels },
      { parent: this, dependsOn: inheritedDependsOn(opts) },
    );

    this.container = new docker.Container(
      name,
      {
        name: args.nodeName,
        hostname: args.nodeName,
        image: args.image,
        entrypoints: entrypoint(args.role),
        envs: pulumi.secret(args.envs),
        uploads: containerUploads(args.role),
        labels,
        networksAdvanced: [{ name: args.networkName, aliases: [args.nodeName] }],
        ports: [{ internal: CONTAINER_PORT, external: args.hostPort, ip: args.bindAddress }],
        volumes: [{ volumeName: this.volume.name, containerPath: CONTAINER_VOLUME_DIR }],
        healthcheck: {
          tests: ["CMD", "bash", `${CONTAINER_ASSETS_DIR}/healthcheck.sh`],
          // Docker's default is 30 s; dependants (replicas, the post-step) wait on this.
          interval: "1s",
          timeout: "3s",
          retries: 3,
        },
        wait: true,
        waitTimeout: HEALTH_WAIT_SECONDS[args.role],
        // Comes back after a crash or a Docker restart; `docker stop` by hand is respected
        // until the next `pulumi up`, which starts it again (mustRun).
        restart: "unless-stopped",
        // SIGINT is PostgreSQL's fast shutdown: clean, without waiting for clients to leave.
        stopSignal: "SIGINT",
        destroyGraceSeconds: 60,
        shmSize: 256,
      },
      { parent: this, dependsOn: [...inheritedDependsOn(opts), this.volume] },
    );

    this.registerOutputs({ volume: this.volume, container: this.container });
  }
}
