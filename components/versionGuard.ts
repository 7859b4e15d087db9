import * as pulumi from "@pulumi/pulumi";
import { HostStep } from "./hostStep";

/** What `assets/guard.mjs` prints. */
export interface VersionCheck {
  /** The nodes' image. */
  image: string;
  /** The image's PostgreSQL major; null when no volume held data yet (nothing compared). */
  major: string | null;
  /** Each volume of the cluster and the major that wrote its data (null: empty). */
  volumes: { volume: string; major: string | null }[];
}

/** Arguments of a {@link VersionGuard}. */
export interface VersionGuardArgs {
  /** The nodes' image. */
  readonly image: string;
  /** The cluster's name: its volumes carry the label `pg-cluster.cluster=<name>`. */
  readonly clusterName: string;
  /**
   * The engines of the cluster's Docker hosts, each checked.
   * @default the engine of the environment's DOCKER_HOST (the docker provider's)
   */
  readonly dockerHosts?: readonly string[];
  /** Backups are on: the image must have pgBackRest. */
  readonly backup?: boolean;
}

/**
 * The major-version guard: every node container depends on it, and it runs when the image
 * changes (`assets/guard.mjs`). It fails, before any container is created or replaced, when the
 * image's PostgreSQL major differs from the one that wrote a node's data: a server cannot start
 * on another major's data directory, so an image swap across majors would only take every node
 * down.
 */
export class VersionGuard extends HostStep<VersionCheck> {
  constructor(name: string, args: VersionGuardArgs, opts?: pulumi.ComponentResourceOptions) {
    super(
      "pg-cluster:index:VersionGuard",
      name,
      "guard.mjs",
      {
        environment: {
          PGC_IMAGE: args.image,
          PGC_CLUSTER: args.clusterName,
          ...(args.dockerHosts ? { PGC_DOCKER_HOSTS: JSON.stringify(args.dockerHosts) } : {}),
          ...(args.backup ? { PGC_BACKUP: "on" } : {}),
        },
        // Turning backups on checks the image again (for pgBackRest).
        triggers: args.backup ? [args.image, "backup"] : [args.image],
      },
      opts,
    );
  }
}
