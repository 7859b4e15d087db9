/**
 * A throwaway stack of the real program driven by the Pulumi Automation API: real `pulumi up`,
 * `preview` and `destroy` with the CLI and plugins from scripts/provision-toolchain.sh, on a
 * file:// backend in a scratch directory. The project is the repository itself (index.ts,
 * Pulumi.yaml); the stack's config file is removed again when the stack is.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import { spawnSync } from "node:child_process";
import * as path from "node:path";
import { EngineEvent, LocalWorkspace, Stack } from "@pulumi/pulumi/automation";
import type { ChangeSummary, UpResult } from "../../scripts/driver/dockerDriver";

const ROOT = path.resolve(__dirname, "..", "..");
const SECRET_KEYS = new Set(["superuserPassword", "replicationPassword"]);

/** True when the toolchain's PULUMI_HOME has the docker and command plugins the program needs. */
export function pulumiPluginsInstalled(): boolean {
  const home = process.env.PULUMI_HOME;
  const docker = process.env.DOCKER_PROVIDER_VERSION;
  const command = process.env.COMMAND_PROVIDER_VERSION;
  if (!home || !docker || !command) return false;
  return (
    fs.existsSync(
      path.join(home, "plugins", `resource-docker-v${docker}`, "pulumi-resource-docker"),
    ) &&
    fs.existsSync(
      path.join(home, "plugins", `resource-command-v${command}`, "pulumi-resource-command"),
    )
  );
}

/** Counts the steps on custom resources (not components, the stack or providers), as the driver does. */
function counter(): { summary: ChangeSummary; onEvent: (e: EngineEvent) => void } {
  const summary: ChangeSummary = { create: 0, update: 0, replace: 0, delete: 0, same: 0 };
  const onEvent = (e: EngineEvent) => {
    const m = e.resourcePreEvent?.metadata;
    if (!m) return;
    if (m.type.startsWith("pg-cluster:") || m.type.startsWith("pulumi:")) return;
    if (
      m.op === "create" ||
      m.op === "update" ||
      m.op === "replace" ||
      m.op === "delete" ||
      m.op === "same"
    ) {
      summary[m.op]++;
    }
  };
  return { summary, onEvent };
}

export class PulumiStack {
  private readonly backend: string;
  private stackPromise?: Promise<Stack>;
  /** Everything the engine printed during the last up (the "Pulumi log"). */
  lastOutput = "";

  constructor(readonly name: string) {
    this.backend = fs.mkdtempSync(path.join(os.tmpdir(), "pgc-pulumi-state-"));
  }

  get statePath(): string {
    return path.join(this.backend, ".pulumi", "stacks", "pg-cluster", `${this.name}.json`);
  }

  private stack(): Promise<Stack> {
    this.stackPromise ??= LocalWorkspace.createOrSelectStack(
      { stackName: this.name, workDir: ROOT },
      {
        envVars: {
          PULUMI_BACKEND_URL: `file://${this.backend}`,
          PULUMI_CONFIG_PASSPHRASE: process.env.PULUMI_CONFIG_PASSPHRASE ?? "e2e-passphrase",
          PULUMI_SKIP_UPDATE_CHECK: "true",
          PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION: "true",
          PULUMI_NODEJS_TRANSPILE_ONLY: "true",
        },
      },
    );
    return this.stackPromise;
  }

  /** Makes the stack's config exactly `config` (keys not in it are removed). */
  private async configure(config: Record<string, string>): Promise<Stack> {
    const stack = await this.stack();
    const current = Object.keys(await stack.getAllConfig()).filter((k) =>
      k.startsWith("pg-cluster:"),
    );
    const stale = current.filter((k) => !(k.slice("pg-cluster:".length) in config));
    if (stale.length > 0) await stack.removeAllConfig(stale);
    await stack.setAllConfig(
      Object.fromEntries(
        Object.entries(config).map(([k, v]) => [
          `pg-cluster:${k}`,
          { value: v, secret: SECRET_KEYS.has(k) },
        ]),
      ),
    );
    return stack;
  }

  async up(config: Record<string, string>, opts: { refresh?: boolean } = {}): Promise<UpResult> {
    const stack = await this.configure(config);
    const { summary, onEvent: count } = counter();
    const t0 = Date.now();
    // Per-resource step start and end, from the engine's event stream (for the benchmark).
    const started = new Map<string, { op: string; at: number }>();
    const timings: UpResult["timings"] = [];
    let verifiedMs: number | undefined;
    let engineMs = 0;
    const onEvent = (e: EngineEvent) => {
      count(e);
      const pre = e.resourcePreEvent?.metadata;
      if (pre && pre.op !== "same") started.set(pre.urn, { op: pre.op, at: Date.now() - t0 });
      const done = e.resOutputsEvent?.metadata;
      const s = done && started.get(done.urn);
      if (done && s) {
        const type = done.type;
        const name = done.urn.split("::").slice(-1)[0];
        timings.push({ name, type, op: s.op, startMs: s.at, endMs: Date.now() - t0 });
        // The post-step's command finishing is the cluster being verified.
        if (type === "command:local:Command" && name.endsWith("-check")) {
          verifiedMs = Date.now() - t0;
        }
      }
      if (e.summaryEvent) engineMs = Date.now() - t0;
    };
    this.lastOutput = "";
    const res = await stack.up({
      onEvent,
      onOutput: (out) => (this.lastOutput += out),
      refresh: opts.refresh,
      color: "never",
    });
    const outputs = Object.fromEntries(Object.entries(res.outputs).map(([k, v]) => [k, v.value]));
    return { summary, outputs, timings, verifiedMs, engineMs: engineMs || Date.now() - t0 };
  }

  async preview(config: Record<string, string>): Promise<UpResult> {
    const stack = await this.configure(config);
    const { summary, onEvent } = counter();
    await stack.preview({ onEvent, color: "never" });
    return { summary, outputs: {}, timings: [], engineMs: 0 };
  }

  /** `pulumi preview --expect-no-changes`: throws if the program would change anything. */
  async expectNoChanges(config: Record<string, string>): Promise<void> {
    const stack = await this.configure(config);
    await stack.preview({ expectNoChanges: true, color: "never" });
  }

  /** `pulumi stack output --json`, as a user sees it (no --show-secrets). */
  shownOutputs(): string {
    const r = spawnSync("pulumi", ["stack", "output", "--json", "--stack", this.name], {
      cwd: ROOT,
      encoding: "utf8",
      env: {
        ...process.env,
        PULUMI_BACKEND_URL: `file://${this.backend}`,
        PULUMI_CONFIG_PASSPHRASE: process.env.PULUMI_CONFIG_PASSPHRASE ?? "e2e-passphrase",
      },
    });
    if (r.status !== 0) throw new Error(`pulumi stack output: ${r.stderr}`);
    return r.stdout;
  }

  async destroy(): Promise<void> {
    const stack = await this.stack();
    await stack.destroy({ color: "never" });
  }

  /** Destroys, then removes the stack and its config file from the project directory. */
  async remove(): Promise<void> {
    const stack = await this.stack();
    await stack.destroy({ color: "never" }).catch(() => {});
    await stack.workspace.removeStack(this.name).catch(() => {});
    fs.rmSync(path.join(ROOT, `Pulumi.${this.name}.yaml`), { force: true });
    fs.rmSync(this.backend, { recursive: true, force: true });
  }
}
