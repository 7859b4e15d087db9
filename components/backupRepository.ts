import * as docker from "@pulumi/docker";
import * as pulumi from "@pulumi/pulumi";
import { CONTAINER_BUNDLE, entrypoint, nodeBundle } from "./assets";
import { clusterContainerArgs, inheritedDependsOn } from "./options";
import { CONTAINER_BACKUP_DIR, repositoryMount } from "./postgresNode";

/** Where the repository's pgBackRest server listens inside its container (repository.sh). */
export const REPOSITORY_SERVER_PORT = 8432;

/** Where the repository's certificate bundle is uploaded (lib.sh PGC_SECRETS_FILE there). */
const REPOSITORY_TLS_FILE = "/run/secrets/pg-cluster-tls";

/**
 * How the backup step reaches the repository (assets/backup.mjs's PGC_REPOSITORY): its container
 * and engine, and where its server reaches each node's pgBackRest server (`ctl.sh backup-serve`).
 */
export interface RepositoryAccess {
  readonly name: string;
  /** Its host's engine, for `docker exec` (absent: the environment's DOCKER_HOST). */
  readonly dockerHost?: string;
  /** By node name: the host and port the repository dials for that node's backup server. */
  readonly servers: Readonly<Record<string, { readonly host: string; readonly port: number }>>;
}

/** Arguments of a {@link BackupRepository}. */
export interface BackupRepositoryArgs {
  /** Physical name of the container, its host name on the cluster network and its certificate's CN. */
  readonly containerName: string;
  /** Label value grouping the cluster's Docker objects. */
  readonly clusterName: string;
  /** The nodes' image (it has pgBackRest). */
  readonly image: string;
  /** The cluster's network on the repository's host. */
  readonly networkName: pulumi.Input<string>;
  /** The host address the server's port is published on, and the port. */
  readonly bindAddress: string;
  readonly hostPort: number;
  /** The repository: a volume name, or an absolute path on the Docker host. */
  readonly repository: pulumi.Input<string>;
  /** repository.sh's environment (`KEY=value`): the stanza, the clients' CNs, retention. */
  readonly envs: string[];
  /** The CA's certificate, this container's certificate and its key (PEM; secret). */
  readonly tlsBundle: pulumi.Input<string>;
}

/**
 * The backup repository of a cluster across several Docker hosts (issue 12): a container of the
 * nodes' image on one host, holding the repository and running pgBackRest's TLS server, which
 * every node archives to and the backup step backs up through (assets/repository.sh). Stateless
 * but for the repository, which it mounts: any change replaces it (archiving retries meanwhile,
 * from a spool on each node).
 */
export class BackupRepository extends pulumi.ComponentResource {
  /** The repository's container. */
  public readonly container: docker.Container;

  constructor(name: string, args: BackupRepositoryArgs, opts?: pulumi.ComponentResourceOptions) {
    super("pg-cluster:index:BackupRepository", name, {}, opts);
    this.container = new docker.Container(
      name,
      {
        ...clusterContainerArgs({
          containerName: args.containerName,
          clusterName: args.clusterName,
          networkName: args.networkName,
          bindAddress: args.bindAddress,
          ports: [[REPOSITORY_SERVER_PORT, args.hostPort]],
        }),
        image: args.image,
        entrypoints: [...entrypoint(), "repository"],
        envs: [
          ...args.envs,
          `PGC_SECRETS_FILE=${REPOSITORY_TLS_FILE}`,
          `PGC_REPOSITORY_PORT=${REPOSITORY_SERVER_PORT}`,
          // Its work files (configuration, certificate, locks) in the container: nothing to keep.
          "PGC_VOLUME=/var/lib/pg-cluster-repository",
        ],
        uploads: [
          { file: CONTAINER_BUNDLE, content: nodeBundle(), executable: true },
          {
            file: REPOSITORY_TLS_FILE,
            content: pulumi.secret(args.tlsBundle),
            permissions: "0600",
          },
        ],
        volumes: [repositoryMount(args.repository, CONTAINER_BACKUP_DIR, false)],
      },
      { parent: this, dependsOn: inheritedDependsOn(opts), deleteBeforeReplace: true },
    );
    this.registerOutputs({ container: this.container });
  }
}
