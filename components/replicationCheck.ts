import * as pulumi from "@pulumi/pulumi";
import { HostStep, HostStepArgs } from "./hostStep";

/**
 * One replica's line in the {@link ReplicationReport}. A field the post-step could not learn (the
 * replica did not catch up, or is not connected) is absent rather than null, so the type can be
 * read by Pulumi's schema inference (which accepts optional fields, not `T | null`).
 */
export interface ReplicaReport {
  /** Node name (its container's name and its `application_name`). */
  name: string;
  /** Whether it replayed the post-step's marker in time. */
  caughtUp: boolean;
  /** `pg_stat_replication.state` (`streaming`, ...), or `disconnected`. */
  state: string;
  /** `pg_stat_replication.sync_state` (`async`, `quorum`, ...). */
  syncState?: string;
  /** Its physical slot on the primary. */
  slot: string;
  /** Whether a walsender is using the slot. */
  slotActive: boolean;
  /** `pg_replication_slots.wal_status` (`reserved`, `extended`, `unreserved`, `lost`), or `missing`. */
  slotWalStatus: string;
  /** WAL bytes between the primary's current position and the replica's replay. */
  replayLagBytes?: number;
  /** `pg_stat_replication.replay_lag` in milliseconds. */
  replayLagMs?: number;
  /** Rows in `wizards` on the replica. */
  wizards?: number;
  /** How many times the node has cloned the primary. */
  clones?: number;
  /** Why it last cloned (`initial clone`, `slot lost`). */
  lastCloneReason?: string;
  /** What this up did to it: see {@link PrimaryReport.lastUp}. */
  lastUp?: string;
}

/** The primary's line in the {@link ReplicationReport}. */
export interface PrimaryReport {
  /** Node name. */
  name: string;
  /** The primary's WAL position right after the post-step's marker. */
  lsn: string;
  /** Rows in `wizards` on the primary. */
  wizards: number;
  /**
   * What this up did to the node, judged against the previous verified up: `created` (a new
   * node), `replaced` (a new container on its volume), `restarted` (its server), `reloaded` (its configuration), or
   * `nothing`.
   */
  lastUp?: string;
}

/** Where the router's endpoints lead, as the post-step found by connecting through them. */
export interface RouterReport {
  /** The node behind the read-write endpoint: the primary. */
  readWrite: string;
  /** The node a read-only session landed on: a standby, or the primary when there is none. */
  readOnly: string;
}

/** The primary's WAL archiving, with backups (pg_stat_archiver and pg_wal's queue). */
export interface ArchiverReport {
  /** Its last attempt failed (a failure after the last success): `pulumi up` warns. */
  failing: boolean;
  archivedCount: number;
  lastArchivedWal?: string;
  /** ISO 8601. */
  lastArchivedTime?: string;
  failedCount: number;
  lastFailedWal?: string;
  lastFailedTime?: string;
  /** WAL segments waiting to be archived (16 MiB each in pg_wal). */
  pendingSegments: number;
}

/** What `assets/verify.mjs` prints: the state of replication right after a verified write. */
export interface ReplicationReport {
  /** The primary. */
  primary: PrimaryReport;
  /** Every replica, in order. */
  replicas: ReplicaReport[];
  /** The node each router endpoint handed the post-step's session to. */
  endpoints?: RouterReport;
  /** With backups: the primary's WAL archiving. */
  archiver?: ArchiverReport;
  /** Wizards rows the post-step inserted (0 once seeded). */
  seededRows: number;
  /** How long the post-step took. */
  elapsedMs: number;
}

/** Arguments of a {@link ReplicationCheck}: verify.mjs's environment and what re-runs it. */
export type ReplicationCheckArgs = HostStepArgs;

/**
 * The cluster's post-step: seeds the Wizards table, writes a marker on the primary and waits until
 * every replica has replayed past it, then reports per-replica state, slot and lag. It runs again
 * whenever a node container is created or replaced (scale up/down included).
 */
export class ReplicationCheck extends HostStep<ReplicationReport> {
  constructor(name: string, args: ReplicationCheckArgs, opts?: pulumi.ComponentResourceOptions) {
    super("pg-cluster:index:ReplicationCheck", name, "verify.mjs", args, opts);
    // Archiving that fails keeps the primary working (WAL waits in pg_wal, up to pgBackRest's
    // queue bound) but stops the point-in-time range from growing: said where the user looks.
    this.result.apply((r) => {
      const a = r?.archiver;
      if (a?.failing) {
        pulumi.log.warn(archiverWarning(r.primary.name, a), this);
      }
    });
  }

  /** The parsed report (the step's result). */
  get report(): pulumi.Output<ReplicationReport> {
    return this.result;
  }
}

/** The warning `pulumi up` prints while the primary's archiving fails. */
export function archiverWarning(primary: string, a: ArchiverReport): string {
  return `WAL archiving from ${primary} is failing: ${a.failedCount} failed attempts, the last for ${a.lastFailedWal ?? "?"} at ${a.lastFailedTime ?? "?"} (last archived: ${a.lastArchivedWal ?? "none"} at ${a.lastArchivedTime ?? "never"}); ${a.pendingSegments} WAL segments wait in pg_wal. The primary keeps working; backups and point-in-time recovery stop at the last archived segment until it works again. Check the repository volume and the server's log (docker logs ${primary}).`;
}
