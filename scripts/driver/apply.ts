/**
 * Applies one stack of the program with the docker-direct driver: `npm run up` / `npm run down`
 * use it when the docker and command provider plugins are not installed (see README).
 *
 * Usage: pulumi config --show-secrets --json | node --import tsx scripts/driver/apply.ts up|preview|destroy STACK
 * The config arrives on stdin, never on the command line, so no password shows in the process list.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { DockerDriverStack } from "./dockerDriver";

const [action, stack] = process.argv.slice(2);
const STATE_DIR =
  process.env.PG_CLUSTER_DRIVER_STATE ??
  path.resolve(__dirname, "..", "..", ".state", "docker-direct");

function readConfig(): Record<string, string> {
  const raw = JSON.parse(fs.readFileSync(0, "utf8")) as Record<string, { value?: unknown }>;
  const config: Record<string, string> = {};
  for (const [key, entry] of Object.entries(raw)) {
    if (!key.startsWith("pg-cluster:") || entry.value === undefined) continue;
    config[key.slice("pg-cluster:".length)] = String(entry.value);
  }
  return config;
}

/** Stack outputs as `pulumi stack output` shows them: secrets masked. */
function show(outputs: Record<string, unknown>): Record<string, unknown> {
  const secret = new Set(["connectionString", "readOnlyConnectionString"]);
  return Object.fromEntries(
    Object.entries(outputs).map(([k, v]) => [k, secret.has(k) ? "[secret]" : v]),
  );
}

async function main(): Promise<void> {
  if (!stack || !["up", "preview", "destroy"].includes(action)) {
    throw new Error("usage: apply.ts up|preview|destroy STACK (config JSON on stdin)");
  }
  const driver = new DockerDriverStack(stack, STATE_DIR);
  if (action === "destroy") {
    const summary = await driver.destroy();
    process.stdout.write(`${JSON.stringify({ summary })}\n`);
    return;
  }
  const config = readConfig();
  const result = action === "up" ? await driver.up(config) : await driver.preview(config);
  process.stdout.write(
    `${JSON.stringify({ summary: result.summary, outputs: show(result.outputs) }, null, 2)}\n`,
  );
}

main().catch((err) => {
  process.stderr.write(`error: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
