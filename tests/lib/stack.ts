/**
 * The deployment the end-to-end and fault layers drive: one throwaway stack of the real program.
 * Today it is the docker-direct driver (see dockerDriver.ts for why); every test goes through
 * this interface so the real Pulumi engine can take its place without touching the tests.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import pg from "pg";
import {
  ChangeSummary,
  DockerDriverStack,
  UpResult,
  dockerApi,
} from "../../scripts/driver/dockerDriver";

export const SUPERUSER_PASSWORD = "e2e-Su-pw-4f9b21c7";
export const REPLICATION_PASSWORD = "e2e-Repl-pw-8a3d55e0";

/** The image the e2e layers run (PG_CLUSTER_E2E_IMAGE, default the local PostgreSQL 15 image). */
export const IMAGE = process.env.PG_CLUSTER_E2E_IMAGE ?? "pg-cluster-postgres:15";

export interface TestStack {
  readonly name: string;
  readonly clusterName: string;
  readonly basePort: number;
  config(extra?: Record<string, string>): Record<string, string>;
  up(extra?: Record<string, string>): Promise<UpResult>;
  preview(extra?: Record<string, string>): Promise<{ summary: ChangeSummary }>;
  destroy(): Promise<void>;
  /** The driver's state file (secrets must be encrypted in it). */
  readonly statePath: string;
  /** The post-step's environment as deployed, to run assets/verify.mjs by hand. */
  checkEnvironment(): Record<string, string>;
}

let announced = false;

/** A throwaway stack with its own name and host ports. */
export function newStack(prefix: string, base: Record<string, string> = {}): TestStack {
  if (!announced) {
    announced = true;
    process.stderr.write(
      "NOTE: end-to-end resources are applied by the docker-direct driver (scripts/driver/dockerDriver.ts): " +
        "the docker and command provider plugins cannot be built from the Go module proxy here. " +
        "The program, its inputs, the containers and the post-step are real; the Pulumi engine is not.\n",
    );
  }
  const name = `${prefix}${process.pid % 10000}${Math.floor(Math.random() * 100)}`;
  const basePort = 30000 + Math.floor(Math.random() * 300) * 100;
  const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), "pgc-e2e-state-"));
  const driver = new DockerDriverStack(name, stateDir);
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
  return {
    name,
    clusterName: `pg-cluster-${name}`,
    basePort,
    config,
    up: (extra) => driver.up(config(extra)),
    preview: async (extra) => ({ summary: (await driver.preview(config(extra))).summary }),
    destroy: async () => {
      await driver.destroy();
    },
    statePath: driver.statePath,
    checkEnvironment: () => {
      const check = driver.resources().find((r) => r.name.endsWith("-check"));
      if (!check) throw new Error(`stack ${name} has no post-step deployed`);
      return check.inputs.environment as Record<string, string>;
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
