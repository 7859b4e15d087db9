/**
 * A throwaway stack of the real program driven by the Pulumi Automation API: real `pulumi up`,
 * `preview` and `destroy` with the CLI and plugins from scripts/provision-toolchain.sh, on a
 * file:// backend in a scratch directory. The project is the repository itself (index.ts,
 * Pulumi.yaml); the stack's config file is removed again when the stack is.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import { execFile, spawnSync } from "node:child_process";
import * as path from "node:path";
import { promisify } from "node:util";
import { EngineEvent, LocalWorkspace, Stack } from "@pulumi/pulumi/automation";

const ROOT = path.resolve(__dirname, "..", "..");
const execFileAsync = promisify(execFile);
const SECRET_KEYS = new Set(["superuserPassword", "replicationPassword", "pgadminPassword"]);

/** What an `up` or `preview` did or would do: steps on custom resources, by operation. */
export interface ChangeSummary {
  create: number;
  update: number;
  replace: number;
  delete: number;
  same: number;
}

/** The result of one `up` (or `preview`) of a throwaway stack. */
export interface UpResult {
  summary: ChangeSummary;
  outputs: Record<string, unknown>;
  /** Each resource operation's start and end, in ms from the start of the up (the benchmark's breakdown). */
  timings: { name: string; type: string; op: string; startMs: number; endMs: number }[];
  /** Ms from the start of the up until the post-step finished; absent if it did not run. */
  verifiedMs?: number;
  /** Ms from the start of the up until the engine finished (before outputs are read back). */
  engineMs: number;
}

/**
 * Throws, naming what is missing and the fix, unless the toolchain's PULUMI_HOME has the docker
 * and command plugins the program needs. Without them `pulumi up` would fail later with the
 * engine's less direct "no resource plugin" error, or try a download these machines cannot make.
 */
export function requirePulumiPlugins(): void {
  const home = process.env.PULUMI_HOME;
  const versions = {
    docker: process.env.DOCKER_PROVIDER_VERSION,
    command: process.env.COMMAND_PROVIDER_VERSION,
  };
  if (!home || !versions.docker || !versions.command) {
    throw new Error(
      "PULUMI_HOME, DOCKER_PROVIDER_VERSION or COMMAND_PROVIDER_VERSION is not set: the Pulumi toolchain is not in the environment. Fix: run through npm (npm run test:e2e, npm run bench), or `source scripts/env.sh` first.",
    );
  }
  for (const [name, version] of Object.entries(versions)) {
    const plugin = path.join(
      home,
      "plugins",
      `resource-${name}-v${version}`,
      `pulumi-resource-${name}`,
    );
    if (!fs.existsSync(plugin)) {
      throw new Error(
        `the ${name} provider plugin v${version} is not installed (${plugin} is missing). Fix: run bash scripts/provision-toolchain.sh and read its log (${process.env.PG_CLUSTER_TOOLCHAIN ?? "$PG_CLUSTER_CACHE/toolchain"}/logs/).`,
      );
    }
  }
}

/** Counts the steps on custom resources (not components, the stack or providers). */
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
    requirePulumiPlugins();
    this.backend = fs.mkdtempSync(path.join(os.tmpdir(), "pgc-pulumi-state-"));
  }

  get statePath(): string {
    return path.join(this.backend, ".pulumi", "stacks", "pg-cluster", `${this.name}.json`);
  }

  private stack(): Promise<Stack> {
    this.stackPromise ??= LocalWorkspace.createOrSelectStack(
      { stackName: this.name, workDir: ROOT },
      { envVars: this.env() },
    ).then((stack) => this.lean(stack));
    return this.stackPromise;
  }

  private env(): Record<string, string> {
    return {
      PULUMI_BACKEND_URL: `file://${this.backend}`,
      PULUMI_CONFIG_PASSPHRASE: process.env.PULUMI_CONFIG_PASSPHRASE ?? "e2e-passphrase",
      PULUMI_SKIP_UPDATE_CHECK: "true",
      PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION: "true",
      PULUMI_NODEJS_TRANSPILE_ONLY: "true",
    };
  }

  /**
   * After each up the Automation API runs three more CLI commands (the outputs masked and in
   * plain text, then the last history entry), about 0.4 s of CPU each: CI is CPU-bound on two
   * cores and runs about a hundred ups. The tests read only the plain outputs: one command.
   */
  private lean(stack: Stack): Stack {
    const env = { ...process.env, ...this.env() };
    stack.workspace.stackOutputs = async (name: string) => {
      const { stdout } = await execFileAsync(
        "pulumi",
        ["stack", "output", "--json", "--show-secrets", "--stack", name],
        { cwd: ROOT, env, maxBuffer: 1 << 26 },
      );
      const plain = JSON.parse(stdout) as Record<string, unknown>;
      return Object.fromEntries(
        Object.entries(plain).map(([k, value]) => [k, { value, secret: false }]),
      );
    };
    (stack as unknown as { info: () => Promise<undefined> }).info = async () => undefined;
    return stack;
  }

  /** The config last set by this process (undefined: not yet read), to skip setting it again. */
  private config?: Record<string, string>;

  private async configure(config: Record<string, string>): Promise<Stack> {
    const stack = await this.stack();
    if (JSON.stringify(config) === JSON.stringify(this.config)) return stack;
    const current = this.config
      ? Object.keys(this.config).map((k) => `pg-cluster:${k}`)
      : Object.keys(await stack.getAllConfig()).filter((k) => k.startsWith("pg-cluster:"));
    const stale = current.filter((k) => !(k.slice("pg-cluster:".length) in config));
    this.config = undefined;
    if (stale.length > 0) await stack.removeAllConfig(stale);
    await stack.setAllConfig(
      Object.fromEntries(
        Object.entries(config).map(([k, v]) => [
          `pg-cluster:${k}`,
          { value: v, secret: SECRET_KEYS.has(k) },
        ]),
      ),
    );
    this.config = { ...config };
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
        ...this.env(),
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
