import * as command from "@pulumi/command";
import * as pulumi from "@pulumi/pulumi";
import { ASSETS_DIR } from "./assets";
import { inheritedDependsOn } from "./options";

/** One replica's line in the {@link ReplicationReport}. */
export interface ReplicaReport {
  readonly name: string;
  readonly caughtUp: boolean;
  readonly state: string;
  readonly syncState: string | null;
  readonly slot: string;
  readonly slotActive: boolean;
  readonly slotWalStatus: string;
  readonly replayLagBytes: number | null;
  readonly replayLagMs: number | null;
  readonly wizards: number | null;
  readonly clones: number | null;
  readonly lastCloneReason: string | null;
}

/** What `assets/verify.mjs` prints: the state of replication right after a verified write. */
export interface ReplicationReport {
  readonly primary: { readonly name: string; readonly lsn: string; readonly wizards: number };
  readonly replicas: readonly ReplicaReport[];
  readonly seededRows: number;
  readonly elapsedMs: number;
}

/** Arguments of a {@link ReplicationCheck}. */
export interface ReplicationCheckArgs {
  /** Environment for `assets/verify.mjs` (nodes, credentials, sync setting, timeout). */
  readonly environment: pulumi.Input<Record<string, pulumi.Input<string>>>;
  /** Values whose change must re-run the check: the node containers' IDs. */
  readonly triggers: pulumi.Input<string>[];
}

/**
 * The cluster's post-step: seeds the Wizards table, writes a marker on the primary and waits until
 * every replica has replayed past it, then reports per-replica state, slot and lag. It runs again
 * whenever a node container is created or replaced (scale up/down included).
 */
export class ReplicationCheck extends pulumi.ComponentResource {
  /** The command that runs `assets/verify.mjs`. */
  public readonly step: command.local.Command;
  /** The parsed report. */
  public readonly report: pulumi.Output<ReplicationReport>;

  constructor(name: string, args: ReplicationCheckArgs, opts?: pulumi.ComponentResourceOptions) {
    super("pg-cluster:index:ReplicationCheck", name, {}, opts);
    this.step = new command.local.Command(
      name,
      {
        create: "node verify.mjs",
        dir: ASSETS_DIR,
        environment: pulumi.secret(args.environment),
        triggers: args.triggers,
      },
      { parent: this, dependsOn: inheritedDependsOn(opts) },
    );
    // The report holds no secret, but the provider may mark stdout secret because the
    // environment is: unwrap it so it can be read as a plain stack output.
    this.report = pulumi
      .unsecret(this.step.stdout)
      .apply((out) => JSON.parse(out) as ReplicationReport);
    this.registerOutputs({ step: this.step, report: this.report });
  }
}
