import { ChildProcess, execFileSync, spawn, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { after, before } from "node:test";
import pg from "pg";
import { ASSETS_DIR, nodeBundle, secretsFile } from "../../components/assets";
import { replicationCapacity } from "../../components/settings";
import type { TopologyResult } from "../../components/topology";
import type { RollGateResult } from "../../components/rollGate";

/** PostgreSQL server binaries on the host (Debian's postgresql-15, installed by .ci/run). */
export function postgresBinDir(): string {
  const root = "/usr/lib/postgresql";
  const majors = fs.existsSync(root)
    ? fs.readdirSync(root).filter((d) => fs.existsSync(path.join(root, d, "bin", "postgres")))
    : [];
  if (majors.length === 0) {
    throw new Error(
      "no PostgreSQL server on this host: install Debian's postgresql-15 (scripts/provision-host-postgres.sh, run by .ci/run)",
    );
  }
  return path.join(root, majors.sort((a, b) => Number(b) - Number(a))[0], "bin");
}

/** The integration layer runs the entrypoints as root, as Docker does, so they can drop to postgres. */
export function requireRoot(): void {
  if (process.getuid?.() !== 0) {
    throw new Error(
      "the integration tests must run as root: the entrypoints start as root and drop to the postgres user, as in a container",
    );
  }
}

export const SUPERUSER_PASSWORD = "su-it-'quote:colon\\back";

/** Where the host-side steps reach a node (the component's shape, see assets/pgnode.mjs). */
export interface NodeAddress {
  name: string;
  host: string;
  port: number;
  internalHost?: string;
  internalPort?: number;
  slot?: string;
}

/** The WAL sender and slot limits the component sets for this many replicas. */
function replicationCapacityEnv(replicas: number): Record<string, string> {
  const c = replicationCapacity(replicas);
  return {
    PGC_MAX_WAL_SENDERS: String(c.maxWalSenders),
    PGC_MAX_REPLICATION_SLOTS: String(c.maxReplicationSlots),
  };
}
export const REPLICATION_PASSWORD = "repl-it-'quote:colon";

/**
 * A LocalCluster of 1 + `replicas` started before the enclosing suite's tests, with the table
 * `acked` (id int) the writers use, and destroyed after them.
 */
export function suiteCluster(replicas: number): LocalCluster {
  const cluster = new LocalCluster({ replicas });
  before(async () => {
    await cluster.start();
    await cluster.primary.query("CREATE TABLE acked (id int PRIMARY KEY)");
  });
  after(() => cluster.destroy());
  return cluster;
}

/**
 * Unpacks the node bundle into `home`, as a new container gets its files, and starts the real
 * entrypoint from there with `env`, its output appended to `logFile`; does not wait.
 */
export function launchEntrypoint(
  home: string,
  logFile: string,
  env: Record<string, string>,
): ChildProcess {
  const unpacked = spawnSync("bash", ["-c", nodeBundle()], {
    env: { PATH: process.env.PATH ?? "", PGC_HOME: home, PGC_UNPACK_ONLY: "1" },
    encoding: "utf8",
  });
  if (unpacked.status !== 0) {
    throw new Error(`unpacking the assets into ${home} failed: ${unpacked.stderr}`);
  }
  const log = fs.openSync(logFile, "a");
  try {
    return spawn("bash", [path.join(home, "entrypoint.sh")], { env, stdio: ["ignore", log, log] });
  } finally {
    fs.closeSync(log);
  }
}

/**
 * A node's passwords file (`PGC_SECRETS_FILE`) at `file`, as the component uploads it: root's,
 * 0600 (the entrypoint gives it to the postgres user). Written once; returns `file`.
 */
export function nodeSecretsFile(file: string): string {
  if (!fs.existsSync(file)) {
    fs.writeFileSync(file, secretsFile(SUPERUSER_PASSWORD, REPLICATION_PASSWORD), { mode: 0o600 });
  }
  return file;
}

/** One node: its entrypoint running on the host, with its volume in a scratch directory. */
export class LocalNode {
  process?: ChildProcess;
  readonly volume: string;
  readonly logFile: string;

  constructor(
    readonly cluster: LocalCluster,
    readonly role: "primary" | "replica",
    readonly name: string,
    readonly port: number,
    readonly extraEnv: Record<string, string> = {},
  ) {
    this.volume = path.join(cluster.dir, name);
    this.logFile = path.join(cluster.dir, `${name}.log`);
  }

  /** The node's container environment, as the component sets it (every node the same keys). */
  env(): Record<string, string> {
    const c = this.cluster;
    return {
      PATH: `${postgresBinDir()}:${process.env.PATH}`,
      PGC_VOLUME: this.volume,
      PGC_PORT: String(this.port),
      PGC_LISTEN: c.listen,
      PGC_SOCKET_DIR: c.socketDir,
      PGC_NODE_NAME: this.name,
      PGC_SLOT_NAME: this.slot,
      PGC_SUPERUSER: "postgres",
      PGC_SECRETS_FILE: nodeSecretsFile(path.join(c.dir, `${this.name}.secrets`)),
      PGC_REPLICATION_USER: "replicator",
      PGC_DATABASE: "mydb",
      ...replicationCapacityEnv(c.nodes.length - 1),
      PGC_MAX_SLOT_WAL_KEEP_SIZE: c.maxSlotWalKeepSize,
      PGC_MAX_WAL_SIZE: "1GB",
      PGC_REPLICATION_CIDR: c.replicationCidr,
      PGC_REJECT_ADDRESS: c.rejectAddress,
      PGC_SLOT_CHECK_SECONDS: "1",
      ...this.extraEnv,
    };
  }

  /** Where the node's files are unpacked (the container's /opt/pg-cluster). */
  get home(): string {
    return path.join(this.cluster.dir, `${this.name}-assets`);
  }

  /** How the topology step runs this node's ctl.sh (the component: docker exec). */
  ctlCommand(): { argv: string[]; env: Record<string, string> } {
    return { argv: ["bash", path.join(this.home, "ctl.sh")], env: this.env() };
  }

  get slot(): string {
    return this.name.replace(/-/g, "_");
  }

  /** Where the host-side steps reach this node. */
  address(): NodeAddress {
    return {
      name: this.name,
      host: "127.0.0.1",
      port: this.port,
      internalHost: "127.0.0.1",
      internalPort: this.port,
      slot: this.slot,
    };
  }

  /** Starts the node's real entrypoint from assets/ and waits until it accepts connections. */
  async start(timeoutMs = 60_000): Promise<void> {
    this.launch();
    await this.waitReady(timeoutMs);
  }

  /**
   * Starts the node's real entrypoint without waiting for it. The files reach the node as they
   * reach a container: the bundle (assets/node.sh with the files inside) unpacks them into the
   * node's own directory. Not run from assets/ in the checkout: the entrypoint re-executes itself
   * as the postgres user, who cannot enter a checkout under a 0700 parent (/root, mktemp -d).
   */
  launch(): void {
    this.process = launchEntrypoint(this.home, this.logFile, this.env());
  }

  async waitReady(timeoutMs = 60_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (this.process?.exitCode !== null && this.process?.exitCode !== undefined) {
        throw new Error(
          `${this.name} exited with ${this.process.exitCode}:\n${this.log().slice(-3000)}`,
        );
      }
      try {
        execFileSync(path.join(postgresBinDir(), "pg_isready"), [
          "-q",
          "-h",
          "127.0.0.1",
          "-p",
          String(this.port),
        ]);
        return;
      } catch {
        if (Date.now() > deadline)
          throw new Error(`${this.name} not ready in ${timeoutMs} ms:\n${this.log().slice(-3000)}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }

  /** Fast shutdown (SIGINT, what Docker sends), waiting until the process has gone. */
  async stop(signal: NodeJS.Signals = "SIGINT"): Promise<void> {
    const p = this.process;
    if (!p || p.exitCode !== null || p.signalCode !== null) return;
    const exited = new Promise((r) => p.once("exit", r));
    p.kill(signal);
    await exited;
  }

  log(): string {
    return fs.existsSync(this.logFile) ? fs.readFileSync(this.logFile, "utf8") : "";
  }

  client(host = "127.0.0.1", user = "postgres", password = SUPERUSER_PASSWORD): pg.Client {
    return new pg.Client({
      host,
      port: this.port,
      user,
      password,
      database: "mydb",
      connectionTimeoutMillis: 5000,
    });
  }

  async query<T extends pg.QueryResultRow = pg.QueryResultRow>(
    sql: string,
    params: unknown[] = [],
  ): Promise<T[]> {
    const c = this.client();
    await c.connect();
    try {
      return (await c.query<T>(sql, params)).rows;
    } finally {
      await c.end();
    }
  }

  /** This node's pg-cluster-node.json (clone count and reason), if it is a replica. */
  nodeState(): { clones: number; lastCloneReason: string } {
    return JSON.parse(
      fs.readFileSync(path.join(this.volume, "pgdata", "pg-cluster-node.json"), "utf8"),
    );
  }
}

/** A primary and replicas on loopback ports, run from the real assets without Docker. */
export class LocalCluster {
  readonly dir: string;
  readonly socketDir: string;
  readonly basePort: number;
  primary: LocalNode;
  replicas: LocalNode[] = [];

  constructor(
    readonly options: { replicas: number; maxSlotWalKeepSize?: string } = { replicas: 2 },
    /** Address the servers listen on. */
    readonly listen = "127.0.0.1",
    readonly replicationCidr = "127.0.0.0/30",
    readonly rejectAddress = "127.0.0.3",
  ) {
    requireRoot();
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), "pgc-it-"));
    fs.chmodSync(this.dir, 0o755);
    this.socketDir = path.join(this.dir, "sockets");
    // Below Linux's ephemeral range (32768-60999), where a listener can collide with the local
    // end of an outgoing connection.
    this.basePort = 20000 + Math.floor(Math.random() * 12000);
    this.primary = new LocalNode(this, "primary", "primary", this.basePort);
    for (let i = 1; i <= options.replicas; i++) {
      this.replicas.push(new LocalNode(this, "replica", `replica-${i}`, this.basePort + i));
    }
  }

  get maxSlotWalKeepSize(): string {
    return this.options.maxSlotWalKeepSize ?? "1GB";
  }

  /** Every node, node 0 first. */
  get nodes(): LocalNode[] {
    return [this.primary, ...this.replicas];
  }

  /** Starts every node's entrypoint, then the topology step bootstraps them, as in `pulumi up`. */
  async start(): Promise<void> {
    for (const n of this.nodes) n.launch();
    const r = await this.topology();
    if (r.status !== 0) throw new Error(`the topology step failed:\n${r.stderr}`);
    await Promise.all(this.nodes.map((n) => n.waitReady()));
  }

  /**
   * Runs the topology step (assets/topology.mjs) as the component's local.Command does, making
   * `desired` (default node 0) the primary of these nodes.
   */
  async topology(
    desired: LocalNode = this.primary,
    nodes: LocalNode[] = this.nodes,
    extra: Record<string, string> = {},
  ): Promise<{ status: number; stdout: string; stderr: string; result: TopologyResult | null }> {
    // Asynchronous: a test's own clients (a writer measuring the switchover) keep running.
    const r = await runAssetAsync("topology.mjs", {
      ...this.stepEnv(
        nodes.map((n) => n.address()),
        desired.name,
      ),
      PGC_CTL: JSON.stringify(Object.fromEntries(nodes.map((n) => [n.name, n.ctlCommand()]))),
      PGC_SYNCHRONOUS_REPLICAS: "0",
      ...extra,
    });
    return { ...r, result: jsonOrNull<TopologyResult>(r.stdout) };
  }

  /**
   * Runs a roll gate (assets/roll.mjs) as the component's local.Command does: before `node`'s
   * container, after `after`'s. `running` stands in for `docker container inspect` of `node`
   * (null: no container); the gate compares it with `spec`.
   */
  async roll(
    node: LocalNode,
    after: LocalNode | undefined,
    running: { image: string; env: string[] } | null,
    spec: { image: string; env: string[] },
    extra: Record<string, string> = {},
  ): Promise<{ status: number; stdout: string; stderr: string; result: RollGateResult | null }> {
    const inspect = running ? [{ Config: { Image: running.image, Env: running.env } }] : [];
    const r = await runAssetAsync("roll.mjs", {
      ...this.stepEnv(
        this.nodes.map((n) => n.address()),
        this.primary.name,
      ),
      PGC_REPLICATION_PASSWORD: REPLICATION_PASSWORD,
      PGC_CTL: JSON.stringify(Object.fromEntries(this.nodes.map((n) => [n.name, n.ctlCommand()]))),
      PGC_ROLL_NODE: node.name,
      PGC_ROLL_AFTER: after?.name ?? "",
      PGC_ROLL_SPEC: JSON.stringify(spec),
      // `docker container inspect NAME` as the gate runs it; an absent container is an error there.
      PGC_INSPECT_ARGV: JSON.stringify(
        running
          ? ["bash", "-c", 'printf "%s" "$PGC_FAKE_INSPECT"', "_"]
          : ["bash", "-c", 'echo "Error: No such container: $1" >&2; exit 1', "_"],
      ),
      PGC_FAKE_INSPECT: JSON.stringify(inspect),
      PGC_TIMEOUT_SECONDS: "60",
      ...extra,
    });
    return { ...r, result: jsonOrNull<RollGateResult>(r.stdout) };
  }

  /** What both host-side steps get: the nodes, the desired primary, the superuser. */
  stepEnv(nodes: NodeAddress[], desired: string): Record<string, string> {
    return {
      PGC_NODES: JSON.stringify(nodes),
      PGC_DESIRED_PRIMARY: desired,
      PGC_SUPERUSER: "postgres",
      PGC_SUPERUSER_PASSWORD: SUPERUSER_PASSWORD,
      PGC_REPLICATION_USER: "replicator",
      PGC_DATABASE: "mydb",
    };
  }

  /**
   * Runs the post-step program (assets/verify.mjs) as the component's local.Command does, over
   * this cluster's replicas unless others are given.
   */
  verify(
    timeoutSeconds = 60,
    replicas: NodeAddress[] = this.replicas.map((r) => r.address()),
    primary: LocalNode = this.primary,
  ): {
    status: number;
    stdout: string;
    stderr: string;
    report: VerifyReport | null;
  } {
    return runAsset("verify.mjs", [], {
      ...this.stepEnv([primary.address(), ...replicas], primary.name),
      PGC_TIMEOUT_SECONDS: String(timeoutSeconds),
    });
  }

  /** Runs the slot-drop program (assets/slot.mjs) as a replica node's delete step does. */
  dropSlot(slot: string): { status: number; stdout: string; stderr: string } {
    return runAsset("slot.mjs", ["drop"], {
      ...this.stepEnv(
        this.nodes.map((n) => n.address()),
        this.primary.name,
      ),
      PGC_SLOT_NAME: slot,
    });
  }

  async destroy(): Promise<void> {
    for (const n of [...this.replicas, this.primary]) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([n.stop(), new Promise((r) => (timer = setTimeout(r, 15_000)))]);
      // A pending timer would keep the test process alive for the rest of its 15 s.
      clearTimeout(timer);
      if (n.process && n.process.exitCode === null && n.process.signalCode === null)
        n.process.kill("SIGKILL");
    }
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

export interface VerifyReport {
  primary: { name: string; lsn: string; wizards: number };
  replicas: {
    name: string;
    caughtUp: boolean;
    state: string;
    slot: string;
    slotActive: boolean;
    slotWalStatus: string;
    replayLagBytes: number | null;
    wizards: number | null;
    clones: number | null;
    lastCloneReason: string | null;
  }[];
  seededRows: number;
  elapsedMs: number;
}

function runAsset(file: string, args: string[], env: Record<string, string>) {
  const r = spawnSync(process.execPath, [path.join(ASSETS_DIR, file), ...args], {
    env: { ...process.env, ...env },
    encoding: "utf8",
    timeout: 180_000,
  });
  let report: VerifyReport | null = null;
  try {
    report = JSON.parse(r.stdout);
  } catch {
    report = null;
  }
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr, report };
}

/** A host-side program's one JSON line, or null when it printed none (it failed). */
function jsonOrNull<T>(stdout: string): T | null {
  try {
    return JSON.parse(stdout) as T;
  } catch {
    return null;
  }
}

/** Runs a host-side asset program without blocking the test's event loop. */
export function runAssetAsync(
  file: string,
  env: Record<string, string>,
): Promise<{ status: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(ASSETS_DIR, file)], {
      env: { ...process.env, ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    child.on("error", reject);
    child.on("close", (code) => resolve({ status: code ?? -1, stdout, stderr }));
  });
}

/**
 * A `pg` stream factory whose connections leave from `source` (a loopback address), standing in
 * for a client on another host, inside or at the edge of the cluster's network.
 */
export function streamFrom(source: string): () => net.Socket {
  return () => {
    const socket = new net.Socket();
    const connect = socket.connect.bind(socket);
    // pg calls connect(port, host); bind the source address on the way.
    (socket as unknown as { connect: (p: number, h: string) => net.Socket }).connect = (p, h) =>
      connect({ port: p, host: h, localAddress: source });
    return socket;
  };
}

/** Writes `rows` rows of ~1 kB on the primary, in batches; returns the table's row count. */
export async function writeRows(node: LocalNode, table: string, rows: number): Promise<number> {
  const c = node.client();
  await c.connect();
  try {
    await c.query(`CREATE TABLE IF NOT EXISTS ${table} (id bigserial PRIMARY KEY, payload text)`);
    for (let done = 0; done < rows; done += 50_000) {
      await c.query(
        `INSERT INTO ${table} (payload) SELECT repeat(md5(g::text), 32) FROM generate_series(1, $1) g`,
        [Math.min(50_000, rows - done)],
      );
    }
    return Number((await c.query(`SELECT count(*) AS n FROM ${table}`)).rows[0].n);
  } finally {
    await c.end();
  }
}
