/**
 * The docker-direct driver: applies the exact resources the program registers (planned under Pulumi
 * mocks by plan.ts) to the real Docker engine, in dependency order, with the semantics of the
 * docker and command providers that matter to the cluster: create, replace on input change
 * (delete-before-replace for containers), re-run of a command on change (replace on `triggers`),
 * a command's `delete` at removal, health waits, uploads before start, restart of a stopped
 * container on the next up, and deletes of removed resources in reverse dependency order.
 *
 * It stands in for the Pulumi engine only where the docker and command provider plugins are not
 * installed (the official ones cannot be built from the Go module proxy; see README, "What runs
 * where"). Everything the containers and the post-step do is real.
 */
import { spawn, spawnSync } from "node:child_process";
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as http from "node:http";
import * as path from "node:path";
import { isDeepStrictEqual } from "node:util";

const REPO = path.resolve(__dirname, "..", "..");
const DOCKER_SOCKET = process.env.DOCKER_SOCKET ?? "/var/run/docker.sock";

/** A custom resource as the program registers it. */
export interface PlannedResource {
  type: string;
  name: string;
  inputs: Record<string, unknown>;
  /** Inputs the program marked secret: kept encrypted in the driver's state, like Pulumi does. */
  secretInputs?: string[];
  dependsOn: string[];
}

interface Plan {
  resources: PlannedResource[];
  outputs: Record<string, unknown>;
  error?: string;
}

interface StateEntry extends PlannedResource {
  id: string;
  stdout?: string;
}

/** What an `up` or `preview` did or would do, in Pulumi's terms. */
export interface ChangeSummary {
  create: number;
  update: number;
  replace: number;
  delete: number;
  same: number;
}

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

/** Runs index.ts under mocks for `config` and returns what it registers. */
export function plan(stack: string, config: Record<string, string>): Plan {
  const namespaced = Object.fromEntries(
    Object.entries(config).map(([k, v]) => [`pg-cluster:${k}`, v]),
  );
  const r = spawnSync(
    process.execPath,
    ["--import", "tsx", path.join(__dirname, "plan.ts"), stack, JSON.stringify(namespaced)],
    {
      cwd: REPO,
      encoding: "utf8",
      maxBuffer: 64 * 1024 * 1024,
    },
  );
  if (r.status !== 0 && !r.stdout) throw new Error(`plan.ts failed: ${r.stderr}`);
  return JSON.parse(r.stdout) as Plan;
}

/** Docker Engine API JSON: untyped on purpose, this driver reads a handful of fields. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type DockerJson = any;

/** A minimal Docker Engine API client over the local socket. */
export function dockerApi(
  method: string,
  apiPath: string,
  body?: unknown,
  raw?: Buffer,
): Promise<{ status: number; data: DockerJson }> {
  return new Promise((resolve, reject) => {
    const payload = raw ?? (body === undefined ? undefined : Buffer.from(JSON.stringify(body)));
    const req = http.request(
      {
        socketPath: DOCKER_SOCKET,
        path: `/v1.41${apiPath}`,
        method,
        headers: payload
          ? {
              "Content-Type": raw ? "application/x-tar" : "application/json",
              "Content-Length": payload.length,
            }
          : {},
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c) => chunks.push(c));
        res.on("end", () => {
          const text = Buffer.concat(chunks).toString("utf8");
          let data: DockerJson = text;
          try {
            data = text ? JSON.parse(text) : null;
          } catch {
            /* plain text */
          }
          resolve({ status: res.statusCode ?? 0, data });
        });
      },
    );
    req.on("error", (err: NodeJS.ErrnoException) =>
      reject(
        new Error(
          `cannot reach the Docker engine at unix://${DOCKER_SOCKET} (${err.code ?? err.message}). Fix: start it (bash scripts/provision-docker.sh starts Debian's dockerd), then run up again.`,
        ),
      ),
    );
    if (payload) req.write(payload);
    req.end();
  });
}

async function docker(
  method: string,
  apiPath: string,
  body?: unknown,
  raw?: Buffer,
  ok: number[] = [200, 201, 204, 304],
): Promise<DockerJson> {
  const r = await dockerApi(method, apiPath, body, raw);
  if (!ok.includes(r.status)) {
    throw new Error(
      `docker ${method} ${apiPath}: ${r.status} ${typeof r.data === "object" ? r.data?.message : r.data}`,
    );
  }
  return r.data;
}

/** A tar archive of files (and their parent directories), as the provider uploads them. */
export function tarOf(files: { file: string; content: string; executable?: boolean }[]): Buffer {
  const blocks: Buffer[] = [];
  const header = (name: string, size: number, mode: number, type: "0" | "5") => {
    const h = Buffer.alloc(512);
    h.write(name, 0, 100, "utf8");
    h.write(mode.toString(8).padStart(7, "0") + "\0", 100);
    h.write("0000000\0", 108);
    h.write("0000000\0", 116);
    h.write(size.toString(8).padStart(11, "0") + "\0", 124);
    h.write(
      Math.floor(Date.now() / 1000)
        .toString(8)
        .padStart(11, "0") + "\0",
      136,
    );
    h.write("        ", 148);
    h.write(type, 156);
    h.write("ustar\0" + "00", 257);
    let sum = 0;
    for (const b of h) sum += b;
    h.write(sum.toString(8).padStart(6, "0") + "\0 ", 148);
    return h;
  };
  const dirs = new Set<string>();
  for (const f of files) {
    const rel = f.file.replace(/^\//, "");
    const parts = rel.split("/").slice(0, -1);
    for (let i = 1; i <= parts.length; i++) {
      const d = parts.slice(0, i).join("/") + "/";
      if (!dirs.has(d)) {
        dirs.add(d);
        blocks.push(header(d, 0, 0o755, "5"));
      }
    }
    const body = Buffer.from(f.content, "utf8");
    blocks.push(header(rel, body.length, f.executable ? 0o755 : 0o644, "0"));
    blocks.push(body, Buffer.alloc((512 - (body.length % 512)) % 512));
  }
  blocks.push(Buffer.alloc(1024));
  return Buffer.concat(blocks);
}

/** Go-style duration ("1s", "200ms") in nanoseconds, as the provider passes them to Docker. */
function nanos(d: unknown): number {
  const m = /^([0-9.]+)(ms|s|m)$/.exec(String(d ?? "0s"));
  if (!m) return 0;
  return Math.round(Number(m[1]) * { ms: 1e6, s: 1e9, m: 60e9 }[m[2] as "ms" | "s" | "m"]);
}

const labelsOf = (labels: unknown) =>
  Object.fromEntries(
    ((labels as { label: string; value: string }[]) ?? []).map((l) => [l.label, l.value]),
  );

/** Runs a command the way the command provider's local.Command does. */
function runCommand(script: string, inputs: Record<string, unknown>): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn("/bin/sh", ["-c", script], {
      cwd: (inputs.dir as string) ?? REPO,
      env: { ...process.env, ...((inputs.environment as Record<string, string>) ?? {}) },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    let err = "";
    child.stdout.on("data", (c) => (out += c));
    child.stderr.on("data", (c) => (err += c));
    child.on("close", (code) => {
      if (code === 0) resolve(out.replace(/\n$/, ""));
      else reject(new Error(`command failed (exit ${code}): ${script}\n${err}`));
    });
  });
}

/** Topological levels: each resource after everything it depends on; a level runs in parallel. */
function levels(resources: PlannedResource[]): PlannedResource[][] {
  const byName = new Map(resources.map((r) => [r.name, r]));
  const depth = new Map<string, number>();
  const visit = (r: PlannedResource): number => {
    const known = depth.get(r.name);
    if (known !== undefined) return known;
    const d =
      Math.max(-1, ...r.dependsOn.filter((n) => byName.has(n)).map((n) => visit(byName.get(n)!))) +
      1;
    depth.set(r.name, d);
    return d;
  };
  resources.forEach(visit);
  const out: PlannedResource[][] = [];
  for (const r of resources) (out[depth.get(r.name)!] ??= []).push(r);
  return out.filter(Boolean);
}

/** Implicit dependencies the engine gets from Outputs passed as inputs: containers on their network. */
function withImplicitDeps(resources: PlannedResource[]): PlannedResource[] {
  const networks = resources.filter((r) => r.type === "docker:index/network:Network");
  return resources.map((r) => {
    if (r.type !== "docker:index/container:Container") return r;
    const nets = ((r.inputs.networksAdvanced as { name: string }[]) ?? []).map((n) => n.name);
    const extra = networks.filter((n) => nets.includes(n.inputs.name as string)).map((n) => n.name);
    return { ...r, dependsOn: [...new Set([...r.dependsOn, ...extra])] };
  });
}

/** One stack of the program, applied by the docker-direct driver. State is a JSON file. */
export class DockerDriverStack {
  private readonly stateFile: string;

  constructor(
    readonly stack: string,
    stateDir: string,
  ) {
    fs.mkdirSync(stateDir, { recursive: true, mode: 0o700 });
    this.stateFile = path.join(stateDir, `${stack}.json`);
  }

  /**
   * State on disk keeps secret inputs encrypted (AES-256-GCM, key from PULUMI_CONFIG_PASSPHRASE
   * and a per-state salt, as Pulumi's passphrase provider does), never in plain text.
   */
  private key(salt: string): Buffer {
    return crypto.scryptSync(
      process.env.PULUMI_CONFIG_PASSPHRASE ?? "",
      Buffer.from(salt, "base64"),
      32,
    );
  }

  private load(): StateEntry[] {
    if (!fs.existsSync(this.stateFile)) return [];
    const file = JSON.parse(fs.readFileSync(this.stateFile, "utf8")) as {
      salt: string;
      resources: StateEntry[];
    };
    const key = this.key(file.salt);
    return file.resources.map((r) => {
      const inputs = { ...r.inputs };
      for (const k of r.secretInputs ?? []) {
        const [iv, tag, data] = String(inputs[k])
          .split(":")
          .map((x) => Buffer.from(x, "base64"));
        const d = crypto.createDecipheriv("aes-256-gcm", key, iv);
        d.setAuthTag(tag);
        inputs[k] = JSON.parse(Buffer.concat([d.update(data), d.final()]).toString("utf8"));
      }
      return { ...r, inputs };
    });
  }

  private save(state: StateEntry[]): void {
    const salt = fs.existsSync(this.stateFile)
      ? (JSON.parse(fs.readFileSync(this.stateFile, "utf8")) as { salt: string }).salt
      : crypto.randomBytes(16).toString("base64");
    const key = this.key(salt);
    const resources = state.map((r) => {
      const inputs = { ...r.inputs };
      for (const k of r.secretInputs ?? []) {
        const iv = crypto.randomBytes(12);
        const c = crypto.createCipheriv("aes-256-gcm", key, iv);
        const data = Buffer.concat([c.update(JSON.stringify(inputs[k]), "utf8"), c.final()]);
        inputs[k] = [iv, c.getAuthTag(), data].map((b) => b.toString("base64")).join(":");
      }
      return { ...r, inputs };
    });
    fs.mkdirSync(path.dirname(this.stateFile), { recursive: true, mode: 0o700 });
    fs.writeFileSync(this.stateFile, JSON.stringify({ salt, resources }, null, 2), { mode: 0o600 });
  }

  /** Path of the state file (the fault layer checks that no password is in it). */
  get statePath(): string {
    return this.stateFile;
  }

  /** The state's entries, for assertions (resource names, container IDs). */
  resources(): StateEntry[] {
    return this.load();
  }

  async up(config: Record<string, string>): Promise<UpResult> {
    return this.apply(config, false);
  }

  async preview(config: Record<string, string>): Promise<UpResult> {
    return this.apply(config, true);
  }

  private async apply(config: Record<string, string>, dryRun: boolean): Promise<UpResult> {
    const p = plan(this.stack, config);
    if (p.error) throw new Error(p.error);
    const desired = withImplicitDeps(p.resources);
    const state = this.load();
    const current = new Map(state.map((s) => [s.name, s]));
    const summary: ChangeSummary = { create: 0, update: 0, replace: 0, delete: 0, same: 0 };
    const timings: UpResult["timings"] = [];
    const upStarted = Date.now();
    const timed = async <T>(
      r: { name: string; type: string },
      op: string,
      f: () => Promise<T>,
    ): Promise<T> => {
      const startMs = Date.now() - upStarted;
      try {
        return await f();
      } finally {
        timings.push({ name: r.name, type: r.type, op, startMs, endMs: Date.now() - upStarted });
      }
    };
    const commit = (entry: StateEntry) => {
      current.set(entry.name, entry);
      if (!dryRun) this.save([...current.values()]);
    };

    for (const level of levels(desired)) {
      await Promise.all(
        level.map(async (r) => {
          const cur = current.get(r.name);
          if (!cur) {
            summary.create++;
            if (!dryRun) commit(await timed(r, "create", () => this.create(r)));
            return;
          }
          const same = isDeepStrictEqual(cur.inputs, r.inputs);
          if (r.type === "command:local:Command") {
            if (!isDeepStrictEqual(cur.inputs.triggers, r.inputs.triggers)) {
              summary.replace++;
              if (dryRun) return;
              const created = await timed(r, "replace", () => this.create(r));
              await this.remove(cur);
              commit(created);
            } else if (!same) {
              summary.update++;
              if (!dryRun) commit(await timed(r, "update", () => this.create(r)));
            } else summary.same++;
            return;
          }
          if (!same) {
            summary.replace++;
            if (dryRun) return;
            await timed(r, "delete-replaced", () => this.remove(cur));
            commit(await timed(r, "replace", () => this.create(r)));
            return;
          }
          if (r.type === "docker:index/container:Container" && !(await this.running(cur.id))) {
            // mustRun: a container found stopped is started again.
            summary.update++;
            if (!dryRun) await timed(r, "start", () => this.startAndWait(cur.id, r));
            return;
          }
          summary.same++;
        }),
      );
    }

    const wanted = new Set(desired.map((r) => r.name));
    const removed = [...current.values()].filter((s) => !wanted.has(s.name));
    for (const level of levels(removed).reverse()) {
      summary.delete += level.length;
      if (dryRun) continue;
      await Promise.all(
        level.map(async (r) => {
          await timed(r, "delete", () => this.remove(r as StateEntry));
          current.delete(r.name);
          this.save([...current.values()]);
        }),
      );
    }

    const check = [...current.values()].find(
      (s) => s.type === "command:local:Command" && s.name.endsWith("-check"),
    );
    const outputs = {
      ...p.outputs,
      replicationReport: check?.stdout ? JSON.parse(check.stdout) : undefined,
    };
    const verified = timings.find(
      (t) => t.type === "command:local:Command" && t.name.endsWith("-check"),
    );
    return {
      summary,
      outputs,
      timings,
      verifiedMs: verified?.endMs,
      engineMs: Date.now() - upStarted,
    };
  }

  async destroy(): Promise<ChangeSummary> {
    const state = this.load();
    const current = new Map(state.map((s) => [s.name, s]));
    for (const level of levels(state).reverse()) {
      await Promise.all(
        level.map(async (r) => {
          await this.remove(r as StateEntry);
          current.delete(r.name);
          this.save([...current.values()]);
        }),
      );
    }
    return { create: 0, update: 0, replace: 0, delete: state.length, same: 0 };
  }

  private async create(r: PlannedResource): Promise<StateEntry> {
    const i = r.inputs;
    switch (r.type) {
      case "docker:index/network:Network": {
        const res = await docker("POST", "/networks/create", {
          Name: i.name,
          Driver: i.driver ?? "bridge",
          Labels: labelsOf(i.labels),
          CheckDuplicate: true,
        });
        return { ...r, id: res.Id };
      }
      case "docker:index/volume:Volume": {
        const res = await docker("POST", "/volumes/create", {
          Name: i.name,
          Labels: labelsOf(i.labels),
        });
        return { ...r, id: res.Name };
      }
      case "docker:index/container:Container":
        return { ...r, id: await this.createContainer(r) };
      case "command:local:Command":
        return { ...r, id: r.name, stdout: await runCommand(String(i.create), i) };
      default:
        throw new Error(`the docker-direct driver does not know ${r.type}`);
    }
  }

  private async createContainer(r: PlannedResource): Promise<string> {
    const i = r.inputs;
    await this.ensureImage(String(i.image));
    const ports = (i.ports as { internal: number; external: number; ip?: string }[]) ?? [];
    const nets = (i.networksAdvanced as { name: string; aliases?: string[] }[]) ?? [];
    const hc = i.healthcheck as
      { tests: string[]; interval?: string; timeout?: string; retries?: number } | undefined;
    const res = await docker(
      "POST",
      `/containers/create?name=${encodeURIComponent(String(i.name))}`,
      {
        Hostname: i.hostname,
        Image: i.image,
        Entrypoint: i.entrypoints,
        Env: i.envs,
        Labels: labelsOf(i.labels),
        StopSignal: i.stopSignal,
        Healthcheck: hc && {
          Test: hc.tests,
          Interval: nanos(hc.interval),
          Timeout: nanos(hc.timeout),
          Retries: hc.retries ?? 0,
        },
        ExposedPorts: Object.fromEntries(ports.map((p) => [`${p.internal}/tcp`, {}])),
        HostConfig: {
          PortBindings: Object.fromEntries(
            ports.map((p) => [
              `${p.internal}/tcp`,
              [{ HostIp: p.ip ?? "0.0.0.0", HostPort: String(p.external) }],
            ]),
          ),
          Binds: ((i.volumes as { volumeName: string; containerPath: string }[]) ?? []).map(
            (v) => `${v.volumeName}:${v.containerPath}`,
          ),
          RestartPolicy: { Name: i.restart ?? "no" },
          ShmSize: i.shmSize ? Number(i.shmSize) * 1024 * 1024 : undefined,
          NetworkMode: nets[0]?.name,
        },
        NetworkingConfig: {
          EndpointsConfig: Object.fromEntries(
            nets.map((n) => [n.name, { Aliases: n.aliases ?? [] }]),
          ),
        },
      },
    );
    const id = res.Id as string;
    try {
      const uploads =
        (i.uploads as { file: string; content: string; executable?: boolean }[]) ?? [];
      if (uploads.length > 0)
        await docker("PUT", `/containers/${id}/archive?path=/`, undefined, tarOf(uploads));
      await this.startAndWait(id, r);
      return id;
    } catch (err) {
      // Leave nothing behind: the next up must not need a manual cleanup.
      await docker("DELETE", `/containers/${id}?force=true`, undefined, undefined, [204, 404]);
      const message = (err as Error).message;
      if (/port is already allocated|address already in use/.test(message)) {
        const port = ((i.ports as { external: number; ip?: string }[]) ?? []).map(
          (p) => `${p.ip ?? "0.0.0.0"}:${p.external}`,
        );
        throw new Error(
          `container ${i.name}: host port ${port.join(", ")} is already in use. Fix: stop what uses it, or choose other ports with pulumi config set primaryPort / replicaBasePort, then run up again. (${message})`,
        );
      }
      throw err;
    }
  }

  /** Like the provider: use the local image, else try to pull it (bounded), else say what to do. */
  private async ensureImage(image: string): Promise<void> {
    if ((await dockerApi("GET", `/images/${encodeURIComponent(image)}/json`)).status === 200)
      return;
    const colon = image.lastIndexOf(":");
    const [from, tag] =
      colon > image.lastIndexOf("/")
        ? [image.slice(0, colon), image.slice(colon + 1)]
        : [image, "latest"];
    const pull = await Promise.race([
      dockerApi(
        "POST",
        `/images/create?fromImage=${encodeURIComponent(from)}&tag=${encodeURIComponent(tag)}`,
      ),
      new Promise<{ status: number; data: DockerJson }>((r) =>
        setTimeout(() => r({ status: 504, data: "pull timed out" }), 30_000),
      ),
    ]);
    if ((await dockerApi("GET", `/images/${encodeURIComponent(image)}/json`)).status === 200)
      return;
    const why =
      typeof pull.data === "object" && pull.data !== null
        ? pull.data.message
        : String(pull.data).slice(0, 200);
    throw new Error(
      `image ${image} is not on the Docker host and cannot be pulled (${pull.status} ${why}). Fix: build a local one (bash scripts/provision-image.sh --local 15) and pulumi config set image pg-cluster-postgres:15, or make ${image} available, then run up again.`,
    );
  }

  private async startAndWait(id: string, r: PlannedResource): Promise<void> {
    await docker("POST", `/containers/${id}/start`);
    if (!r.inputs.wait) return;
    const deadline = Date.now() + Number(r.inputs.waitTimeout ?? 60) * 1000;
    // The provider polls the container's health once a second; so does this driver.
    for (;;) {
      const info = await docker("GET", `/containers/${id}/json`);
      if (info.State?.Health?.Status === "healthy") return;
      if (Date.now() > deadline) {
        const logs = spawnSync("docker", ["logs", "--tail", "30", id], { encoding: "utf8" });
        throw new Error(
          `container ${r.inputs.name} failed to be in healthy state:\n${logs.stdout}${logs.stderr}`,
        );
      }
      await new Promise((res) => setTimeout(res, 1000));
    }
  }

  private async running(id: string): Promise<boolean> {
    const r = await dockerApi("GET", `/containers/${id}/json`);
    return r.status === 200 && r.data.State?.Running === true;
  }

  private async remove(s: StateEntry): Promise<void> {
    switch (s.type) {
      case "docker:index/network:Network":
        await docker("DELETE", `/networks/${s.id}`, undefined, undefined, [204, 404]);
        return;
      case "docker:index/volume:Volume":
        await docker("DELETE", `/volumes/${s.id}`, undefined, undefined, [204, 404]);
        return;
      case "docker:index/container:Container":
        await docker(
          "POST",
          `/containers/${s.id}/stop?t=${Number(s.inputs.destroyGraceSeconds ?? 0)}`,
          undefined,
          undefined,
          [204, 304, 404],
        );
        await docker("DELETE", `/containers/${s.id}?force=true`, undefined, undefined, [204, 404]);
        return;
      case "command:local:Command":
        if (s.inputs.delete) await runCommand(String(s.inputs.delete), s.inputs);
        return;
      default:
        throw new Error(`the docker-direct driver does not know ${s.type}`);
    }
  }
}
