import * as pulumi from "@pulumi/pulumi";
import { HostStep, HostStepArgs } from "./hostStep";

/** What `assets/backup.mjs` prints: the backup it took, as pgBackRest's info reports it. */
export interface BackupResult {
  /** The node it was taken on (the primary then). */
  node: string;
  /** pgBackRest's label, e.g. 20261127-101500F. */
  label: string;
  /** full, diff or incr. */
  type: string;
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
 * The backup step (issue 12, docs/design/backups.md): a pgBackRest backup, taken on the node
 * that is primary when it runs (`ctl.sh backup`), once when the cluster is made and again at each
 * new `backup.trigger`.
 */
export class Backup extends HostStep<BackupResult> {
  constructor(name: string, args: BackupStepArgs, opts?: pulumi.ComponentResourceOptions) {
    super("pg-cluster:index:Backup", name, "backup.mjs", args, opts);
  }
}
