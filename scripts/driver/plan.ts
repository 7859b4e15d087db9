/**
 * Runs the real program (index.ts) under Pulumi mocks for one stack config and prints, as JSON,
 * every custom resource it registers — type, logical name, inputs (secrets unwrapped, since the
 * driver must apply them) and the custom resources it depends on — plus the stack outputs.
 *
 * Used by the docker-direct driver (dockerDriver.ts), which applies these exact inputs to a real
 * Docker engine when the docker/command provider plugins are not installed.
 *
 * Usage: node --import tsx scripts/driver/plan.ts STACK '{"pg-cluster:replicas":"2",...}'
 */
import * as fs from "node:fs";

const [stack, configJson] = process.argv.slice(2);
// The mock runtime reads stack config from PULUMI_CONFIG when @pulumi/pulumi loads.
process.env.PULUMI_CONFIG = configJson;

interface Planned {
  type: string;
  name: string;
  custom: boolean;
  inputs: Record<string, unknown>;
  /** Top-level inputs the program passed as secrets: the driver keeps them encrypted in state. */
  secretInputs: string[];
  parent?: string;
  dependsOn: string[];
}

async function main(): Promise<void> {
  const pulumi = await import("@pulumi/pulumi");
  const planned = new Map<string, Planned>();
  const names = new Map<unknown, string>();
  const SECRET_SIG = "4dabf18193072939515e22adb298388d";
  const unwrap = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(unwrap);
    if (v && typeof v === "object") {
      if (SECRET_SIG in v) return unwrap((v as unknown as { value: unknown }).value);
      return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, unwrap(x)]));
    }
    return v;
  };
  const opts = new Map<string, { parent?: unknown; dependsOn: unknown[] }>();

  pulumi.runtime.setMocks(
    {
      newResource(args) {
        const p = planned.get(`${args.type}::${args.name}`);
        if (p) {
          p.inputs = unwrap(args.inputs) as Record<string, unknown>;
          p.secretInputs = Object.entries(args.inputs)
            .filter(([, v]) => v !== null && typeof v === "object" && SECRET_SIG in v)
            .map(([k]) => k);
        }
        const state: Record<string, unknown> = {
          ...args.inputs,
          name: args.inputs.name ?? args.name,
        };
        if (args.type === "command:local:Command") state.stdout = "{}";
        return { id: `${args.name}-id`, state };
      },
      call(args) {
        throw new Error(`unexpected invoke ${args.token}`);
      },
    },
    "pg-cluster",
    stack,
    false,
  );
  const record: import("@pulumi/pulumi").ResourceTransformation = (t) => {
    const key = `${t.type}::${t.name}`;
    names.set(t.resource, key);
    const deps = t.opts.dependsOn;
    opts.set(key, {
      parent: t.opts.parent,
      dependsOn: deps === undefined ? [] : Array.isArray(deps) ? deps : [deps],
    });
    planned.set(key, {
      type: t.type,
      name: t.name,
      custom: t.resource instanceof pulumi.CustomResource,
      inputs: {},
      secretInputs: [],
      dependsOn: [],
    });
    return undefined;
  };

  let program: Record<string, unknown> = {};
  try {
    // Inside the stack, as `pulumi up` runs it, so a stack transformation can see every resource.
    await pulumi.runtime.runInPulumiStack(async () => {
      pulumi.runtime.registerStackTransformation(record);
      program = await import("../../index");
      return program;
    });
  } catch (err) {
    process.stdout.write(
      JSON.stringify({ error: err instanceof Error ? err.message : String(err) }),
    );
    return;
  }
  const outputs: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(program)) {
    if (pulumi.Output.isInstance(value)) {
      outputs[key] = await new Promise((resolve) =>
        (value as import("@pulumi/pulumi").Output<unknown>).apply(resolve),
      );
    }
  }
  await new Promise((r) => setTimeout(r, 100));

  for (const [key, o] of opts) {
    const p = planned.get(key);
    if (!p) continue;
    p.parent = o.parent ? names.get(o.parent) : undefined;
    p.dependsOn = o.dependsOn.map((d) => names.get(d)).filter((d): d is string => d !== undefined);
  }
  // A dependency on a component means a dependency on every custom resource beneath it.
  const keyOf = (r: Planned) => `${r.type}::${r.name}`;
  const children = (key: string): string[] =>
    [...planned.values()]
      .filter((r) => r.parent === key)
      .flatMap((r) => (r.custom ? [r.name] : children(keyOf(r))));
  const custom = [...planned.values()]
    .filter((r) => r.custom)
    .map((r) => ({
      type: r.type,
      name: r.name,
      inputs: r.inputs,
      secretInputs: r.secretInputs,
      dependsOn: [
        ...new Set(
          r.dependsOn.flatMap((d) =>
            planned.get(d)?.custom ? [planned.get(d)!.name] : children(d),
          ),
        ),
      ],
    }));
  delete outputs.replicationReport;
  fs.writeSync(1, JSON.stringify({ resources: custom, outputs }));
}

main().catch((err) => {
  process.stdout.write(JSON.stringify({ error: err instanceof Error ? err.stack : String(err) }));
});
