import * as pulumi from "@pulumi/pulumi";
import { HostStep, HostStepArgs } from "./hostStep";

/** What `assets/roll.mjs` prints after a run. */
export interface RollGateResult {
  /** The node whose container comes after the gate. */
  node: string;
  /** Whether its container was about to be replaced when the gate ran. */
  replaced: boolean;
  /** What the gate did (waited for the node before it, drained this one, a switchover). */
  actions: string[];
}

/** Arguments of a {@link RollGate}: roll.mjs's environment and what re-runs it. */
export type RollGateArgs = HostStepArgs;

/**
 * A roll gate (`assets/roll.mjs`, docs/design/changes-without-outage.md): the cluster chains its
 * node containers through one gate each, standbys first and the desired primary last, so an up
 * that replaces them replaces one at a time. A gate waits until the node before it streams and
 * has caught up, then readies the next: a standby leaves the router's read-only backend, the
 * primary hands its role to a caught-up standby by a planned switchover.
 */
export class RollGate extends HostStep<RollGateResult> {
  constructor(name: string, args: RollGateArgs, opts?: pulumi.ComponentResourceOptions) {
    // A change of its environment alone (the chain re-ordered by a new primary, the node list
    // after a scale) replaces no container: recorded, not run (a gate checks its nodes in
    // ~0.5 s, one after another). Its triggers say when it must run.
    super("pg-cluster:index:RollGate", name, "roll.mjs", { ...args, update: NOT_RUN }, opts);
  }
}

/** The update of a gate: its result line, saying it did not run. */
const NOT_RUN = 'printf \'{"node":"%s","replaced":false,"actions":[]}\\n\' "$PGC_ROLL_NODE"';
