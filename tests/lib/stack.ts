/**
 * The deployment the end-to-end and fault layers drive: one throwaway stack of the real program,
 * on the real Pulumi engine (pulumiStack.ts) when the toolchain has the docker and command plugins,
 * else on the docker-direct driver (scripts/driver/dockerDriver.ts). Tests see one interface.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import { spawnSync } from "node:child_process";
import * as path from "node:path";
import pg from "pg";
import { PulumiStack, pulumiPluginsInstalled } from "./pulumiStack";
import {
  ChangeSummary,
  DockerDriverStack,
  UpResult,
  dockerApi,
} from "../../scripts/driver/dockerDriver";

export const SUPERUSER_PASSWORD = "e2e-Su-pw-4f9b21c7";
export const REPLICATION_PASSWORD = "e2e-Repl-pw-8a3d55e0";

/** The image the e2e layers run (PG_CLUSTER_E2E_IMAGE, default the local PostgreSQL 15 image). */
const ROOT = path.resolve(__dirname, "..", "..");

export const IMAGE = process.env.PG_CLUSTER_E2E_IMAGE ?? "pg-cluster-postgres:15";

export interface TestStack {
  /** Which engine applies the program: real Pulumi, or the docker-direct driver. */
  readonly engine: "pulumi" | "driver";
  readonly name: string;
  readonly clusterName: string;
  readonly basePort: number;
  config(extra?: Record<string, string>): Record<string, string>;
  /** `up`; `refresh` reads live state first (`pulumi up --refresh`), as `npm run up` does. */
  up(extra?: Record<string, string>, opts?: { refresh?: boolean }): Promise<UpResult>;
  preview(extra?: Record<string, string>): Promise<{ summary: ChangeSummary }>;
  destroy(): Promise<void>;
  /** Destroys and forgets the stack (state, config file). */
  remove(): Promise<void>;
  /** The stack's state file (secrets must be encrypted in it). */
  readonly statePath: string;
  /** The post-step's environment, to run assets/verify.mjs by hand. */
  checkEnvironment(): Record<string, string>;
  /** `pulumi preview --expect-no-changes`: rejects if the program would change anything. */
  expectNoChanges(): Promise<void>;
  /** The stack's outputs as a user sees them, without --show-secrets. */
  shownOutputs(): string;
  /** What the engine printed during the last up. */
  lastLog(): string;
}

let announced = false;

/** The engine the e2e and fault layers use: real Pulumi when its plugins are installed. */
export function engine(): "pulumi" | "driver" {
  const wanted = process.env.PG_CLUSTER_ENGINE;
  if (wanted === "pulumi" || wanted === "driver") return wanted;
  return pulumiPluginsInstalled() ? "pulumi" : "driver";
}

/** A throwaway stack with its own name and host ports. */
export function newStack(prefix: string, base: Record<string, string> = {}): TestStack {
  const which = engine();
  if (!announced) {
    announced = true;
    process.stderr.write(
      which === "pulumi"
        ? "NOTE: end-to-end stacks run with the real Pulumi engine (Automation API, file backend).\n"
        : "NOTE: end-to-end resources are applied by the docker-direct driver (scripts/driver/dockerDriver.ts): " +
            "the docker and command provider plugins are not installed. The program, its inputs, the containers " +
            "and the post-step are real; the Pulumi engine is not.\n",
    );
  }
  const name = `${prefix}${process.pid % 10000}${Math.floor(Math.random() * 100)}`;
  // Below Linux's ephemeral range (32768-60999): a published port in it can collide with the
  // local end of any outgoing connection and fail with "address already in use".
  const basePort = 20000 + Math.floor(Math.random() * 120) * 100;
  const config = (extra: Record<string, string> = {}) => ({
    image: IMAGE,
    replicas: "2",
    primaryPort: String(basePort),
    replicaBasePort: String(basePort + 1),
    superuserPassword: SUPERUSER_PASSWORD,
    replicationPassword: REPLICATION_PASSWORD,
    ...base,
    ...extra,
  });
  const checkEnvironment = () => {
    const c = config();
    const cluster = `pg-cluster-${name}`;
    return {
      PGC_PRIMARY: JSON.stringify({
        name: `${cluster}-primary`,
        host: "localhost",
        port: basePort,
      }),
      PGC_REPLICAS: JSON.stringify(
        Array.from({ length: Number(c.replicas) }, (_, i) => ({
          name: `${cluster}-replica-${i + 1}`,
          host: "localhost",
          port: basePort + 1 + i,
          slot: `replica_${i + 1}`,
        })),
      ),
      PGC_SUPERUSER: "postgres",
      PGC_SUPERUSER_PASSWORD: SUPERUSER_PASSWORD,
      PGC_DATABASE: "mydb",
      PGC_SYNC_STANDBY_NAMES: "",
      PGC_TIMEOUT_SECONDS: "60",
    };
  };
  const common = {
    engine: which,
    name,
    clusterName: `pg-cluster-${name}`,
    basePort,
    config,
    checkEnvironment,
  };
  if (which === "pulumi") {
    const p = new PulumiStack(name);
    return {
      ...common,
      up: (extra, opts) => p.up(config(extra), opts),
      preview: async (extra) => ({ summary: (await p.preview(config(extra))).summary }),
      destroy: () => p.destroy(),
      remove: () => p.remove(),
      statePath: p.statePath,
      shownOutputs: () => p.shownOutputs(),
      expectNoChanges: () => p.expectNoChanges(config()),
      lastLog: () => p.lastOutput,
    };
  }
  const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), "pgc-e2e-state-"));
  const driver = new DockerDriverStack(name, stateDir);
  return {
    ...common,
    up: (extra) => driver.up(config(extra)),
    preview: async (extra) => ({ summary: (await driver.preview(config(extra))).summary }),
    destroy: async () => {
      await driver.destroy();
    },
    remove: async () => {
      await driver.destroy();
      fs.rmSync(stateDir, { recursive: true, force: true });
    },
    statePath: driver.statePath,
    shownOutputs: () => {
      const r = spawnSync(
        process.execPath,
        ["--import", "tsx", path.join(ROOT, "scripts/driver/apply.ts"), "preview", name],
        {
          cwd: ROOT,
          encoding: "utf8",
          input: JSON.stringify(
            Object.fromEntries(
              Object.entries(config()).map(([k, v]) => [`pg-cluster:${k}`, { value: v }]),
            ),
          ),
          env: { ...process.env, PG_CLUSTER_DRIVER_STATE: stateDir },
        },
      );
      if (r.status !== 0) throw new Error(`apply.ts preview: ${r.stderr}`);
      return r.stdout;
    },
    lastLog: () => "",
    expectNoChanges: async () => {
      const { summary } = await driver.preview(config());
      if (summary.create + summary.update + summary.replace + summary.delete > 0) {
        throw new Error(`changes expected to be none: ${JSON.stringify(summary)}`);
      }
    },
  };
}

/** Connects with `pg` to a `host:port` endpoint as the superuser. */
export async function connectTo(endpoint: string, database = "mydb"): Promise<pg.Client> {
  const [host, port] = endpoint.split(":");
  const client = new pg.Client({
    host,
    port: Number(port),
    user: "postgres",
    password: SUPERUSER_PASSWORD,
    database,
    connectionTimeoutMillis: 5000,
  });
  await client.connect();
  return client;
}

/** Runs one query against an endpoint. */
export async function queryAt<T extends pg.QueryResultRow = pg.QueryResultRow>(
  endpoint: string,
  sql: string,
  params: unknown[] = [],
): Promise<T[]> {
  const c = await connectTo(endpoint);
  try {
    return (await c.query<T>(sql, params)).rows;
  } finally {
    await c.end();
  }
}

/** Polls `probe` every 100 ms until it returns true or `timeoutMs` passes; returns the time taken. */
export async function waitUntil(
  what: string,
  probe: () => Promise<boolean>,
  timeoutMs: number,
): Promise<number> {
  const t0 = Date.now();
  let last = "";
  for (;;) {
    try {
      if (await probe()) return Date.now() - t0;
    } catch (err) {
      last = (err as Error).message;
    }
    if (Date.now() - t0 > timeoutMs)
      throw new Error(`${what}: not within ${timeoutMs} ms${last ? ` (last error: ${last})` : ""}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Docker's view of a container by name (null if absent). */
export async function inspectContainer(name: string): Promise<{
  Id: string;
  State: { StartedAt: string; Running: boolean; Health?: { Status: string } };
  RestartCount: number;
} | null> {
  const r = await dockerApi("GET", `/containers/${name}/json`);
  return r.status === 200 ? r.data : null;
}

/** Names of the Docker objects (containers, volumes, networks) labelled with a cluster's name. */
export async function dockerObjects(
  clusterName: string,
): Promise<{ containers: string[]; volumes: string[]; networks: string[] }> {
  const filter = encodeURIComponent(
    JSON.stringify({ label: [`pg-cluster.cluster=${clusterName}`] }),
  );
  const containers = (await dockerApi("GET", `/containers/json?all=true&filters=${filter}`))
    .data as { Names: string[] }[];
  const volumes = (await dockerApi("GET", `/volumes?filters=${filter}`)).data as {
    Volumes: { Name: string }[] | null;
  };
  const networks = (await dockerApi("GET", `/networks?filters=${filter}`)).data as {
    Name: string;
  }[];
  return {
    containers: containers.map((c) => c.Names[0].replace(/^\//, "")).sort(),
    volumes: (volumes.Volumes ?? []).map((v) => v.Name).sort(),
    networks: networks.map((n) => n.Name).sort(),
  };
}
