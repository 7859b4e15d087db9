/**
 * The deployment the end-to-end and fault layers drive: one throwaway stack of the real program on
 * the real Pulumi engine (pulumiStack.ts), and the probes the tests use on it.
 */
import * as net from "node:net";
import * as tls from "node:tls";
import pg from "pg";
import { caFor, sslFor, trustStackCa } from "./clientTls";
import { dockerApi } from "./docker";
import { ROUTER_IMAGE } from "./majors";
import { ChangeSummary, PulumiStack, UpResult } from "./pulumiStack";
import { claimPortBlock } from "./ports";

// Each test process (file) its own: a test that looks for its passwords in the machine's process
// list must not find another file's (the CLI test sets them on `pulumi config set` command lines).
export { libpqTlsEnv, sslFor, trustCa, trustStackCa } from "./clientTls";

export const SUPERUSER_PASSWORD = `e2e-Su-pw-${process.pid}-4f9b21c7`;
export const REPLICATION_PASSWORD = `e2e-Repl-pw-${process.pid}-8a3d55e0`;

/** The image the e2e layers run (PG_CLUSTER_E2E_IMAGE, default the local PostgreSQL 15 image). */
export const IMAGE = process.env.PG_CLUSTER_E2E_IMAGE ?? "pg-cluster-postgres:15";

/** One throwaway stack of the real program, as the end-to-end and fault layers drive it. */
export interface TestStack {
  readonly name: string;
  readonly clusterName: string;
  readonly basePort: number;
  config(extra?: Record<string, string>): Record<string, string>;
  /**
   * `up`; `refresh` reads live state first (`pulumi up --refresh`), as `npm run up` does when
   * Docker's view differs from the state.
   */
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
  expectNoChanges(extra?: Record<string, string>): Promise<void>;
  /** The stack's outputs as a user sees them, without --show-secrets. */
  shownOutputs(): string;
  /** What the engine printed during the last up. */
  lastLog(): string;
}

/** A throwaway stack with its own name and host ports; throws if the toolchain lacks a plugin. */
export function newStack(prefix: string, base: Record<string, string> = {}): TestStack {
  const name = `${prefix}${process.pid % 10000}${Math.floor(Math.random() * 100)}`;
  // A block of 100 ports no other test process holds, below the ephemeral range (ports.ts).
  const basePort = claimPortBlock();
  const config = (extra: Record<string, string> = {}) => ({
    image: IMAGE,
    routerImage: ROUTER_IMAGE,
    replicas: "2",
    primaryPort: String(basePort),
    replicaBasePort: String(basePort + 1),
    superuserPassword: SUPERUSER_PASSWORD,
    replicationPassword: REPLICATION_PASSWORD,
    ...base,
    ...extra,
  });
  // The CA the last up reported (caCertificate), for the steps run by hand.
  let ca: string | undefined;
  const checkEnvironment = () => {
    const c = config();
    const cluster = `pg-cluster-${name}`;
    const nodes = Array.from({ length: Number(c.replicas) + 1 }, (_, i) => ({
      name: i === 0 ? `${cluster}-primary` : `${cluster}-replica-${i}`,
      host: "localhost",
      port: basePort + i,
      internalHost: i === 0 ? `${cluster}-primary` : `${cluster}-replica-${i}`,
      slot: i === 0 ? "primary" : `replica_${i}`,
    }));
    return {
      PGC_NODES: JSON.stringify(nodes),
      PGC_DESIRED_PRIMARY: (c as Record<string, string>).primary ?? nodes[0].name,
      PGC_SUPERUSER: "postgres",
      PGC_SUPERUSER_PASSWORD: SUPERUSER_PASSWORD,
      PGC_DATABASE: "mydb",
      PGC_TIMEOUT_SECONDS: "60",
      ...(ca ? { PGC_TLS_CA: ca } : {}),
    };
  };
  const p = new PulumiStack(name);
  return {
    name,
    clusterName: `pg-cluster-${name}`,
    basePort,
    config,
    checkEnvironment,
    up: async (extra, opts) => {
      const result = await p.up(config(extra), opts);
      ca = result.outputs.caCertificate as string | undefined;
      // The router's ports and pgAdmin's are just below basePort: the block is basePort-3.. +96.
      trustStackCa(basePort - 3, basePort + 96, result.outputs.caCertificate as string | undefined);
      return result;
    },
    preview: async (extra) => ({ summary: (await p.preview(config(extra))).summary }),
    destroy: () => p.destroy(),
    remove: () => p.remove(),
    statePath: p.statePath,
    shownOutputs: () => p.shownOutputs(),
    expectNoChanges: (extra) => p.expectNoChanges(config(extra)),
    lastLog: () => p.lastOutput,
  };
}

/** Connects with `pg` to a `host:port` endpoint as the superuser (TLS after {@link trustCa}). */
export async function connectTo(endpoint: string, database = "mydb"): Promise<pg.Client> {
  const [host, port] = endpoint.split(":");
  const open = async (ssl: pg.ClientConfig["ssl"]) => {
    const client = new pg.Client({
      host,
      port: Number(port),
      user: "postgres",
      password: SUPERUSER_PASSWORD,
      database,
      connectionTimeoutMillis: 5000,
      ssl,
    });
    await client.connect();
    return client;
  };
  if (caFor(endpoint) !== "prefer") return open(sslFor(endpoint));
  try {
    return await open({ rejectUnauthorized: false });
  } catch (err) {
    if (!/does not support SSL/.test(String(err))) throw err;
    return open(false);
  }
}

/**
 * The SHA-256 fingerprint of the certificate the PostgreSQL server at `endpoint` presents (an
 * SSLRequest, then a TLS handshake that verifies nothing and sends no query).
 */
export function servedCertificate(endpoint: string): Promise<string> {
  const [host, port] = endpoint.split(":");
  return new Promise((resolve, reject) => {
    const socket = net.connect(Number(port), host);
    socket.setTimeout(5000, () => socket.destroy(new Error(`${endpoint}: no TLS answer in 5 s`)));
    socket.on("error", reject);
    socket.once("connect", () => socket.write(Buffer.from([0, 0, 0, 8, 4, 210, 22, 47])));
    socket.once("data", (answer) => {
      if (answer.toString() !== "S") return reject(new Error(`${endpoint} does not offer TLS`));
      const secure = tls.connect({ socket, rejectUnauthorized: false }, () => {
        resolve(secure.getPeerCertificate().fingerprint256);
        secure.destroy();
      });
      secure.on("error", reject);
    });
  });
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
  Mounts: { Name?: string; Source?: string; Destination: string; RW: boolean }[];
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
