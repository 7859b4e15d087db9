/**
 * A harness for the one entrypoint (assets/entrypoint.sh) and its control verbs (assets/ctl.sh):
 * nodes without a role, each its real entrypoint running on the host as root (as Docker runs it),
 * with its volume in a scratch directory and PostgreSQL on a loopback port. Unlike LocalCluster,
 * nothing starts by itself: a test drives every node's role with `ctl`, as the topology step will.
 */
import { ChildProcess, spawn } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { createServerCertificate } from "../../assets/tls.mjs";
import { replicationCapacity } from "../../components/settings";
import { launchEntrypoint, nodeSecretsFile, postgresBinDir, requireRoot } from "./localCluster";
import { Server, asPostgres } from "./switchoverSteps";

/** The JSON line every `ctl.sh` verb prints: the node's status after the verb. */
export interface NodeStatus {
  node: string;
  volume: "empty" | "populated";
  /** pg_controldata's fields; null on an empty volume. */
  systemIdentifier: string | null;
  state: string | null;
  checkpointLsn: string | null;
  timeline: number | null;
  /** PGDATA/standby.signal exists. */
  standby: boolean;
  /** conf/hold exists: the entrypoint does not start the server. */
  hold: boolean;
  /** A postmaster runs on the data directory. */
  running: boolean;
  /** The node's TLS material is installed (ctl.sh tls). */
  tls: boolean;
  /** Only from `rewind`. */
  rewind?: "done" | "not needed";
}

/** What a `ctl.sh` run printed, and its parsed result line (null if there was none). */
export interface CtlRun {
  code: number | null;
  stdout: string;
  stderr: string;
  result: NodeStatus | null;
}

/** One node: the entrypoint's process, its volume and its log. */
export class EntrypointNode implements Server {
  process?: ChildProcess;
  readonly volume: string;
  readonly logFile: string;
  /** Where the node's files are unpacked, readable by the postgres user. */
  readonly home: string;

  constructor(
    readonly nodes: LocalNodes,
    readonly name: string,
    readonly port: number,
  ) {
    this.volume = path.join(nodes.dir, name);
    this.logFile = path.join(nodes.dir, `${name}.log`);
    this.home = path.join(nodes.dir, `${name}-assets`);
  }

  /** This node's slot name on whichever node is primary. */
  get slot(): string {
    return this.name.replace(/-/g, "_");
  }

  get pgdata(): string {
    return path.join(this.volume, "pgdata");
  }

  get confDir(): string {
    return path.join(this.volume, "conf");
  }

  /** The container's environment: no role, no peers. */
  env(): Record<string, string> {
    const n = this.nodes;
    return {
      PATH: `${postgresBinDir()}:${process.env.PATH}`,
      PGC_VOLUME: this.volume,
      PGC_PORT: String(this.port),
      PGC_LISTEN: n.listen,
      PGC_SOCKET_DIR: n.socketDir,
      PGC_NODE_NAME: this.name,
      PGC_SLOT_NAME: this.slot,
      PGC_SUPERUSER: "postgres",
      PGC_SECRETS_FILE: nodeSecretsFile(path.join(n.dir, `${this.name}.secrets`)),
      PGC_REPLICATION_USER: "replicator",
      PGC_DATABASE: "mydb",
      PGC_MAX_WAL_SENDERS: String(replicationCapacity(n.nodes.length - 1).maxWalSenders),
      PGC_MAX_REPLICATION_SLOTS: String(
        replicationCapacity(n.nodes.length - 1).maxReplicationSlots,
      ),
      PGC_MAX_SLOT_WAL_KEEP_SIZE: n.maxSlotWalKeepSize,
      PGC_MAX_WAL_SIZE: "1GB",
      PGC_REPLICATION_CIDR: n.replicationCidr,
      PGC_REJECT_ADDRESS: n.rejectAddress,
      // Another Docker host of the cluster: its nodes' connections arrive from this address.
      PGC_REPLICATION_PEERS: "127.0.0.6",
      PGC_SLOT_CHECK_SECONDS: "1",
      // pgBackRest's server (ctl.sh backup-serve): a port of its own per node, below the range.
      PGC_BACKUP_SERVER_PORT: String(this.port - 10000),
      ...n.options.env,
    };
  }

  /**
   * Unpacks the node's files (a fresh copy, as a new container gets) and starts its entrypoint
   * without waiting. Copied out of the checkout: the entrypoint re-executes itself as the postgres
   * user, who cannot enter a checkout under a 0700 parent.
   */
  launch(): void {
    this.process = launchEntrypoint(this.home, this.logFile, this.env());
  }

  /** True while the entrypoint's process has not exited. */
  alive(): boolean {
    const p = this.process;
    return p !== undefined && p.exitCode === null && p.signalCode === null;
  }

  /** Sends `signal` to the entrypoint and resolves with its exit code once it has gone. */
  async stop(signal: NodeJS.Signals = "SIGINT"): Promise<number | null> {
    const p = this.process;
    if (!p) return null;
    if (this.alive()) {
      const exited = new Promise((r) => p.once("exit", r));
      p.kill(signal);
      await exited;
    }
    return p.exitCode;
  }

  /** Resolves with the entrypoint's exit code once it exits by itself. */
  async exited(): Promise<number | null> {
    const p = this.process;
    if (p && this.alive()) await new Promise((r) => p.once("exit", r));
    return p?.exitCode ?? null;
  }

  /**
   * Runs `ctl.sh VERB ARGS` as `docker exec` does: as root, with the container's environment.
   * Its stderr is appended to the node's log.
   */
  ctl(verb: string, ...args: string[]): Promise<CtlRun> {
    return this.ctlWithInput(null, verb, ...args);
  }

  /** {@link ctl} with `input` on the verb's stdin (`docker exec -i`). */
  ctlWithInput(input: string | null, verb: string, ...args: string[]): Promise<CtlRun> {
    return new Promise((resolve, reject) => {
      const child = spawn("bash", [path.join(this.home, "ctl.sh"), verb, ...args], {
        env: this.env(),
        stdio: [input === null ? "ignore" : "pipe", "pipe", "pipe"],
      });
      child.stdin?.end(input);
      let stdout = "";
      let stderr = "";
      child.stdout?.on("data", (d) => (stdout += d));
      child.stderr?.on("data", (d) => (stderr += d));
      const timer = setTimeout(() => child.kill("SIGKILL"), 120_000);
      child.on("error", reject);
      child.on("close", (code) => {
        clearTimeout(timer);
        fs.appendFileSync(this.logFile, stderr);
        let result: NodeStatus | null = null;
        try {
          result = JSON.parse(stdout);
        } catch {
          result = null;
        }
        resolve({ code, stdout, stderr, result });
      });
    });
  }

  /** `ctl` that must succeed with exactly one JSON line; returns it. */
  async ctlOk(verb: string, ...args: string[]): Promise<NodeStatus> {
    const run = await this.ctl(verb, ...args);
    if (run.code !== 0 || run.result === null || run.stdout.split("\n").length !== 2) {
      throw new Error(
        `ctl.sh ${verb} ${args.join(" ")} on ${this.name}: exit ${run.code}\n${run.stdout}${run.stderr}`,
      );
    }
    return run.result;
  }

  log(): string {
    return fs.existsSync(this.logFile) ? fs.readFileSync(this.logFile, "utf8") : "";
  }

  /** The postmaster's pid from postmaster.pid, or null when none is recorded. */
  postmasterPid(): number | null {
    const file = path.join(this.pgdata, "postmaster.pid");
    if (!fs.existsSync(file)) return null;
    return Number(fs.readFileSync(file, "utf8").split("\n")[0]);
  }

  /** The data directory's postgresql.auto.conf (where ALTER SYSTEM and ctl.sh keep the upstream). */
  autoConf(): string {
    return fs.readFileSync(path.join(this.pgdata, "postgresql.auto.conf"), "utf8");
  }

  /** This node's pg-cluster-node.json (clone count and reason). */
  nodeState(): { node: string; clones: number; lastCloneReason: string } {
    return JSON.parse(fs.readFileSync(path.join(this.pgdata, "pg-cluster-node.json"), "utf8"));
  }

  /** The primary_conninfo the topology step sets to make this node a standby of `upstream`. */
  conninfoTo(upstream: EntrypointNode): string {
    return [
      "host=127.0.0.1",
      `port=${upstream.port}`,
      "user=replicator",
      `passfile=${path.join(this.confDir, "replication.pgpass")}`,
      `application_name=${this.name}`,
      "connect_timeout=5",
    ].join(" ");
  }
}

/** Nodes on loopback ports in one scratch directory, removed by `destroy`. */
export class LocalNodes {
  readonly dir: string;
  readonly socketDir: string;
  readonly nodes: EntrypointNode[];

  constructor(
    names: string[],
    readonly options: { maxSlotWalKeepSize?: string; env?: Record<string, string> } = {},
    readonly listen = "127.0.0.1",
    /** The cluster's "network"; 127.0.0.3 stands for its gateway. */
    readonly replicationCidr = "127.0.0.0/30",
    readonly rejectAddress = "127.0.0.3",
  ) {
    requireRoot();
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), "pgc-node-"));
    fs.chmodSync(this.dir, 0o755);
    this.socketDir = path.join(this.dir, "sockets");
    // Below Linux's ephemeral range (32768-60999), where a listener can collide with the local
    // end of an outgoing connection.
    const base = 20000 + Math.floor(Math.random() * 11900);
    this.nodes = names.map((name, i) => new EntrypointNode(this, name, base + i));
  }

  get maxSlotWalKeepSize(): string {
    return this.options.maxSlotWalKeepSize ?? "1GB";
  }

  /**
   * Stops every entrypoint (SIGINT, then SIGKILL after 15 s), then any server an entrypoint killed
   * by a test left behind, and removes the directory.
   */
  async destroy(): Promise<void> {
    for (const n of this.nodes) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([n.stop(), new Promise((r) => (timer = setTimeout(r, 15_000)))]);
      clearTimeout(timer);
      if (n.alive()) n.process?.kill("SIGKILL");
    }
    for (const n of this.nodes) {
      const pid = n.postmasterPid();
      if (pid !== null && fs.existsSync(`/proc/${pid}`)) {
        asPostgres("pg_ctl", ["stop", "-D", n.pgdata, "-m", "immediate", "-w", "-t", "20"]);
      }
    }
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

/**
 * What `ctl.sh tls` reads: the CA's certificate, a certificate for `name` (its CN; valid for it,
 * localhost and 127.0.0.1) signed by `ca`, and its key.
 */
export async function tlsBundle(
  ca: { certificate: string; key: string },
  name: string,
): Promise<string> {
  const cert = await createServerCertificate({
    ca,
    commonName: name,
    dnsNames: [name, "localhost"],
    ipAddresses: ["127.0.0.1"],
    days: 1,
  });
  return [ca.certificate, cert.certificate, cert.key].map((p) => p.trim()).join("\n") + "\n";
}
