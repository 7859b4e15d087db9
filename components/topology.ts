import * as command from "@pulumi/command";
import * as pulumi from "@pulumi/pulumi";
import { ASSETS_DIR } from "./assets";
import { inheritedDependsOn } from "./options";

/** What `assets/topology.mjs` prints after a run. */
export interface TopologyResult {
  /** The node that is the primary. */
  primary: string;
  /** The primary's timeline. */
  timeline: number;
  /** What the run did, in order (empty when the cluster already was as asked). */
  actions: string[];
}

/** Arguments of a {@link Topology}. */
export interface TopologyArgs {
  /** Environment for `assets/topology.mjs` (nodes, desired primary, credentials, bounds). */
  readonly environment: pulumi.Input<Record<string, pulumi.Input<string>>>;
  /** Values whose change must run the step again: the desired primary and the containers' IDs. */
  readonly triggers: pulumi.Input<string>[];
}

/**
 * The cluster's topology step (docs/design/primary-as-role.md): bootstraps a new cluster (initdb
 * on the primary, clones of the others), moves the primary by a planned switchover when the
 * `primary` setting changes, makes a rebuilt or demoted node a standby again, and keeps slots and
 * `synchronous_standby_names` in line. It refuses, changing nothing, when the candidate is not a
 * caught-up streaming standby or when the primary's volume is empty while a replica holds the
 * cluster. A node's role lives in its data directory, so none of this replaces a container.
 */
export class Topology extends pulumi.ComponentResource {
  /** The command that runs `assets/topology.mjs`. */
  public readonly step: command.local.Command;
  /** The parsed result of the last run. */
  public readonly result: pulumi.Output<TopologyResult>;

  constructor(name: string, args: TopologyArgs, opts?: pulumi.ComponentResourceOptions) {
    super("pg-cluster:index:Topology", name, {}, opts);
    this.step = new command.local.Command(
      name,
      {
        create: "node topology.mjs",
        dir: ASSETS_DIR,
        environment: pulumi.secret(args.environment),
        triggers: args.triggers,
      },
      { parent: this, dependsOn: inheritedDependsOn(opts) },
    );
    this.result = pulumi
      .unsecret(this.step.stdout)
      .apply((out) => JSON.parse(out) as TopologyResult);
    this.registerOutputs({ step: this.step, result: this.result });
  }
}
