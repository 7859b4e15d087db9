import * as command from "@pulumi/command";
import * as pulumi from "@pulumi/pulumi";
import { ASSETS_DIR } from "./assets";
import { inheritedDependsOn } from "./options";

/** Arguments of a {@link ReplicationSlot}. */
export interface ReplicationSlotArgs {
  /** Slot name on the primary (a SQL identifier). */
  readonly slotName: string;
  /** Environment for `assets/slot.mjs`: where the primary is and the superuser's credentials. */
  readonly environment: pulumi.Input<Record<string, pulumi.Input<string>>>;
}

/**
 * The lifetime of one replica's physical replication slot on the primary. The replica creates the
 * slot itself, reserving WAL, right before it clones (it must also do so when it re-clones). This
 * resource exists for its delete: replicas are created after it and so deleted before it, and
 * then it drops the slot, or the primary would retain WAL for a replica that no longer exists.
 */
export class ReplicationSlot extends pulumi.ComponentResource {
  /** The delete-time step that drops the slot. */
  public readonly dropStep: command.local.Command;
  /** Slot name on the primary. */
  public readonly slotName: string;

  constructor(name: string, args: ReplicationSlotArgs, opts?: pulumi.ComponentResourceOptions) {
    super("pg-cluster:index:ReplicationSlot", name, {}, opts);
    this.slotName = args.slotName;
    this.dropStep = new command.local.Command(
      name,
      {
        // Nothing to do at create time but record the slot's name (see the class comment).
        create: 'printf "%s\\n" "$PGC_SLOT_NAME"',
        delete: "node slot.mjs drop",
        dir: ASSETS_DIR,
        environment: pulumi.secret(
          pulumi
            .output(args.environment)
            .apply((env) => ({ ...env, PGC_SLOT_NAME: args.slotName })),
        ),
      },
      { parent: this, dependsOn: inheritedDependsOn(opts) },
    );
    this.registerOutputs({ dropStep: this.dropStep });
  }
}
