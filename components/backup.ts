import * as pulumi from "@pulumi/pulumi";
import { HostStep, HostStepArgs } from "./hostStep";

/** What `assets/backup.mjs` prints: the backup it took, as pgBackRest's info reports it. */
export interface BackupResult {
  /** The node the step ran pgBackRest on: the one the backup was read from when it took one. */
  node: string;
  /** pgBackRest's label, e.g. 20261127-101500F. */
  label: string;
  /** full, diff or incr. */
  type: string;
  /** Read from a standby (the primary only ran pg_backup_start/stop), not from the primary. */
  fromStandby: boolean;
  /** Why this step's backup was taken on the primary (`backup.target` prefer-standby). */
  primaryBecause?: string;
  /** ISO 8601. */
  start: string;
  stop: string;
  /** The database's size, and what the backup took in the repository (compressed, deduplicated). */
  sizeBytes?: number;
  repoSizeBytes?: number;
  /** The WAL range a restore of it needs. */
  walStart?: string;
  walStop?: string;
  /** Backups the repository holds after it (retention expires older full backups). */
  backups: number;
}

/** Arguments of a {@link Backup} step: backup.mjs's environment and what re-runs it. */
export type BackupStepArgs = HostStepArgs;

/**
 * The backup step (issue 12, docs/design/backups.md): a pgBackRest backup, from a standby where
 * `backup.target` and TLS allow (the primary reached through its pgBackRest server for the
 * backup's start and stop), else on the primary; once when the cluster is made and again at each
 * new `backup.trigger`.
 */
export class Backup extends HostStep<BackupResult> {
  constructor(name: string, args: BackupStepArgs, opts?: pulumi.ComponentResourceOptions) {
    super("pg-cluster:index:Backup", name, "backup.mjs", args, opts);
    this.result.apply((r) => {
      const warning = backupWarning(r);
      if (warning) pulumi.log.warn(warning, this);
    });
  }
}

/**
 * The warning `pulumi up` prints when a backup meant for a standby was taken on the primary
 * because the one from the standby failed; none when the primary was the choice (`backupTarget`
 * primary, `tls` false) or there was no streaming standby.
 */
export function backupWarning(r: BackupResult): string | undefined {
  if (!r.primaryBecause?.startsWith("the backup from ")) return undefined;
  return `backup ${r.label} was taken on the primary ${r.node}, not on a standby, because ${r.primaryBecause}. The backup is good; the primary did the reading. Check that standby (docker logs) and pgBackRest's server log on the primary's volume (pgbackrest/server.log).`;
}
