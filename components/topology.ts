import * as pulumi from "@pulumi/pulumi";
import { HostStep, HostStepArgs } from "./hostStep";

/** What `assets/topology.mjs` prints after a run. */
export interface TopologyResult {
  /** The node that is the primary. */
  primary: string;
  /** The primary's timeline. */
  timeline: number;
  /** What the run did, in order (empty when the cluster already was as asked). */
  actions: string[];
}

/** Arguments of a {@link Topology}: topology.mjs's environment and what re-runs it. */
export type TopologyArgs = HostStepArgs;

/**
 * The cluster's topology step (docs/design/primary-as-role.md): bootstraps a new cluster (initdb
 * on the primary, clones of the others), moves the primary by a planned switchover when the
 * `primary` setting changes, makes a rebuilt or demoted node a standby again, and keeps slots and
 * `synchronous_standby_names` in line. It refuses, changing nothing, when the candidate is not a
 * caught-up streaming standby or when the primary's volume is empty while a replica holds the
 * cluster. A node's role lives in its data directory, so none of this replaces a container.
 */
export class Topology extends HostStep<TopologyResult> {
  constructor(name: string, args: TopologyArgs, opts?: pulumi.ComponentResourceOptions) {
    super("pg-cluster:index:Topology", name, "topology.mjs", args, opts);
  }
}
