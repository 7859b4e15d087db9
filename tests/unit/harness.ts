import * as assert from "node:assert/strict";
import * as pulumi from "@pulumi/pulumi";
import {
  ClusterConfigError,
  PostgresCluster,
  PostgresClusterArgs,
  PostgresClusterOptions,
} from "../../components";

/** A resource as the mock engine saw it. */
export interface Recorded {
  type: string;
  name: string;
  custom: boolean;
  inputs: Record<string, unknown>;
  /** Its provider's reference (`urn::id`), when it was given one. */
  provider?: string;
}

/** A resource as the SDK registered it: its options, seen through a transformation. */
export interface Registered {
  type: string;
  name: string;
  parent?: pulumi.Resource;
  dependsOn: pulumi.Resource[];
  resource?: pulumi.Resource;
}

export const recorded: Recorded[] = [];
export const registered: Registered[] = [];

pulumi.runtime.setMocks(
  {
    newResource(args) {
      recorded.push({
        type: args.type,
        name: args.name,
        custom: args.custom ?? false,
        inputs: args.inputs,
        provider: args.provider,
      });
      const state: Record<string, unknown> = {
        ...args.inputs,
        name: args.inputs.name ?? args.name,
      };
      // The post-step's stdout is its JSON report; the mock provider returns an empty one.
      if (args.type === "command:local:Command") state.stdout = JSON.stringify({ replicas: [] });
      // A TLS step prints a certificate and key (components/tls.ts); these name their step.
      if (
        args.type === "command:local:Command" &&
        /^node tls\.mjs /.test(String(args.inputs.create))
      ) {
        state.stdout = JSON.stringify({
          certificate: `CERT ${args.name}`,
          key: `KEY ${args.name}`,
        });
      }
      return { id: `${args.name}-id`, state };
    },
    call(args) {
      throw new Error(`unexpected invoke in a unit test: ${args.token}`);
    },
  },
  "pg-cluster",
  "dev",
  false,
);

/** The message of the ClusterConfigError that `validate` must throw (bad input, refused). */
export function configErrorOf(validate: () => unknown): string {
  try {
    validate();
  } catch (err) {
    assert.ok(err instanceof ClusterConfigError, `a ClusterConfigError, got ${String(err)}`);
    return err.message;
  }
  assert.fail("expected the input to be rejected");
}

export const PASSWORDS = {
  superuserPassword: "su-Secret-9f1c2a",
  replicationPassword: "repl-Secret-7d3e0b",
};

const SECRET_SIG = "4dabf18193072939515e22adb298388d";

/** Whether a recorded input reached the engine as a secret. */
export function inputIsSecret(value: unknown): boolean {
  return typeof value === "object" && value !== null && SECRET_SIG in value;
}

/** A recorded input's value, unwrapped if it is a secret. */
export function plain<T>(value: unknown): T {
  return (inputIsSecret(value) ? (value as { value: unknown }).value : value) as T;
}

/** Resolves an Output's value (mocks resolve everything). */
/** A recorded container's environment (`KEY=value` entries) as an object. */
export function envOf(r: Recorded): Record<string, string> {
  return Object.fromEntries(
    plain<string[]>(r.inputs.envs).map((e) => [
      e.slice(0, e.indexOf("=")),
      e.slice(e.indexOf("=") + 1),
    ]),
  );
}

/** A recorded step's environment (secret in the inputs, plain here). */
export function stepEnv(r: Recorded): Record<string, string> {
  return plain<Record<string, string>>(r.inputs.environment);
}

export function valueOf<T>(output: pulumi.Output<T>): Promise<T> {
  return new Promise((resolve) => output.apply((v) => resolve(v)));
}

/** Whether an Output is secret. */
export function isSecret(output: pulumi.Output<unknown>): Promise<boolean> {
  return pulumi.isSecret(output);
}

/** Builds a cluster and waits until the mock engine has seen all of its resources. */
/**
 * Builds a cluster under the mocks with `args` (`tls` false unless given: pass `tls: undefined`
 * for the default), recording every resource.
 */
export async function build(
  name: string,
  args: Partial<PostgresClusterArgs>,
  opts: PostgresClusterOptions = {},
): Promise<{ cluster: PostgresCluster; recorded: Recorded[]; registered: Registered[] }> {
  const firstRecorded = recorded.length;
  const firstRegistered = registered.length;
  const cluster = new PostgresCluster(
    name,
    // TLS (on by default) adds its own steps; the tests of other things count without them, and
    // the TLS tests (tests/unit/hosts.test.ts, tls.test.ts) ask for it, or leave it to the default.
    { ...PASSWORDS, tls: false, ...args },
    {
      ...opts,
      transformations: [
        (t) => {
          const deps = t.opts.dependsOn;
          registered.push({
            type: t.type,
            name: t.name,
            parent: t.opts.parent,
            resource: t.resource,
            dependsOn:
              deps === undefined
                ? []
                : Array.isArray(deps)
                  ? (deps as pulumi.Resource[])
                  : [deps as pulumi.Resource],
          });
          return undefined;
        },
      ],
    },
  );
  await valueOf(cluster.replicationReport.apply(() => 0).apply(() => cluster.urn));
  await valueOf(pulumi.all([cluster.connectionString, cluster.replicaEndpoints]));
  // Let the last registrations reach the mock monitor.
  await new Promise((r) => setTimeout(r, 50));
  return {
    cluster,
    recorded: recorded.slice(firstRecorded),
    registered: registered.slice(firstRegistered),
  };
}
