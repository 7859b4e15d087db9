import * as pulumi from "@pulumi/pulumi";
import { HostStep } from "./hostStep";
import { RestoreSettings } from "./settings";

/** What `assets/guard.mjs` prints. */
export interface VersionCheck {
  /** The nodes' image. */
  image: string;
  /** The image's PostgreSQL major; null when no volume held data yet (nothing compared). */
  major: string | null;
  /** Each volume of the cluster and the major that wrote its data (null: empty). */
  volumes: { volume: string; major: string | null }[];
  /**
   * With `restore`, while no volume holds data: the repository's stanza the primary is restored
   * from, and the backup pgBackRest will start from (the latest that ended before the target).
   */
  restore?: { repository: string; stanza: string; backup: string; backupStop: string };
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
  /** A restore: the repository must exist and hold a backup to restore to the target from. */
  readonly restore?: RestoreSettings;
  /** With hosts, the engine of the host the restore reads the repository on (the primary's). */
  readonly restoreDockerHost?: string;
}

/**
 * The major-version guard: every node container depends on it, and it runs when the image
 * changes (`assets/guard.mjs`). It fails, before any container is created or replaced, when the
 * image's PostgreSQL major differs from the one that wrote a node's data: a server cannot start
 * on another major's data directory, so an image swap across majors would only take every node
 * down. With `restore`, it also checks, while no volume holds data yet, that the repository
 * exists and holds a backup of the image's major to restore to the target from.
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
          ...(args.restore ? { PGC_RESTORE: JSON.stringify(args.restore) } : {}),
          ...(args.restore && args.restoreDockerHost
            ? { PGC_RESTORE_DOCKER_HOST: args.restoreDockerHost }
            : {}),
        },
        // Turning backups on checks the image again (for pgBackRest); so does a new restore.
        triggers: [
          args.image,
          ...(args.backup ? ["backup"] : []),
          ...(args.restore ? [JSON.stringify(args.restore)] : []),
        ],
      },
      opts,
    );
  }
}
