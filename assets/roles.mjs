// @ts-check
/**
 * The cluster's roles, shared by the topology step (topology.mjs) and the roll gates (roll.mjs):
 * observing a node (SQL, or its ctl.sh status when it does not answer), a planned switchover
 * that never leaves two writable primaries, and the router's runtime API.
 *
 * Environment: PGC_SUPERUSER, PGC_SUPERUSER_PASSWORD, PGC_DATABASE, PGC_REPLICATION_USER;
 * PGC_SWITCHOVER_MAX_LAG_BYTES, PGC_CTL, PGC_ROUTER, PGC_ROUTER_DOCKER_HOST, PGC_ROUTER_ARGV (see
 * topology.mjs).
 */
import { spawn } from "node:child_process";
import { X509Certificate } from "node:crypto";
import * as net from "node:net";
import * as path from "node:path";
import * as tls from "node:tls";
import { connect, dockerEnv, jsonEnv, log, requireEnv, sleep } from "./pgnode.mjs";

/**
 * A node: `host:port` where the steps (and the nodes on other Docker hosts) reach it,
 * `internalHost:internalPort` where the nodes on its own Docker host reach it; `site` names its
 * Docker host and `dockerHost` is that host's engine (both absent on one host).
 * @typedef {{ name: string, host: string, port: number, internalHost: string,
 *   internalPort?: number, slot: string, site?: string, dockerHost?: string }} TopologyNode
 */
/**
 * @typedef {{ node: string, volume: "empty" | "populated", systemIdentifier: string | null,
 *   state: string | null, checkpointLsn: string | null, timeline: number | null,
 *   standby: boolean, hold: boolean, running: boolean }} CtlStatus
 */
/**
 * @typedef {{ inRecovery: boolean, systemIdentifier: string, replayLsn: string | null,
 *   currentLsn: string | null, pause: string | null, receiver: { status: string,
 *   senderHost: string | null, senderPort: number | null, tli: number } | null,
 *   upstream: string, upstreamSlot: string }} SqlState
 */
/** @typedef {{ node: TopologyNode, sql: SqlState | null, ctl: CtlStatus | null }} Observed */

export const CONTAINER_PORT = 5432;
/** Where the other nodes reach `node`. @param {TopologyNode} node */
export const internalPort = (node) => node.internalPort ?? CONTAINER_PORT;
export const actions = /** @type {string[]} */ ([]);

/**
 * Where `standby` reaches `upstream`: by name on their Docker host's network when they share a
 * host, else at the upstream host's address and published port (Docker NATs the connection, so it
 * arrives from the standby host's address: pg_hba.conf's replication peers).
 * @param {TopologyNode} upstream @param {TopologyNode} standby @returns {{ host: string, port: number }}
 */
export function upstreamAddress(upstream, standby) {
  return (upstream.site ?? "") === (standby.site ?? "")
    ? { host: upstream.internalHost, port: internalPort(upstream) }
    : { host: upstream.host, port: upstream.port };
}

/** @param {string} what */
export function act(what) {
  actions.push(what);
  log(what);
}

/** A refusal: nothing was changed, and the message says what to do. */
export class Refusal extends Error {}

/**
 * Runs a verb of a node's ctl.sh and returns the one JSON line it prints.
 * @param {TopologyNode} node @param {string[]} args @returns {Promise<any>}
 */
export function ctl(node, ...args) {
  return ctlWithInput(node, null, ...args);
}

/**
 * {@link ctl} with `input` on the verb's stdin (`docker exec -i`): how secrets reach a verb,
 * never on its command line.
 * @param {TopologyNode} node @param {string | null} input @param {string[]} args
 * @returns {Promise<any>}
 */
export function ctlWithInput(node, input, ...args) {
  return runCtl(node, CONTAINER_CTL, input, args);
}

/** The node's own ctl.sh, in its image's assets (components/postgresNode.ts). */
const CONTAINER_CTL = "/opt/pg-cluster/ctl.sh";

/**
 * Runs a verb of the backup repository's repository.sh (a cluster across hosts) in its container,
 * `repository` its name and engine, and returns the one JSON line it prints.
 * @param {{ name: string, dockerHost?: string }} repository @param {string[]} args
 * @returns {Promise<any>}
 */
export function repositoryCtl(repository, ...args) {
  return runCtl(
    {
      name: repository.name,
      host: "",
      port: 0,
      internalHost: repository.name,
      slot: "",
      dockerHost: repository.dockerHost,
    },
    "/opt/pg-cluster/repository.sh",
    null,
    args,
  );
}

/**
 * Runs `script` (a ctl.sh in the node's container) with `args`, `input` on its stdin.
 * @param {TopologyNode} node @param {string} script @param {string | null} input
 * @param {string[]} args @returns {Promise<any>}
 */
function runCtl(node, script, input, args) {
  const custom = process.env.PGC_CTL ? jsonEnv("PGC_CTL")[node.name] : undefined;
  const exec = input === null ? ["docker", "exec"] : ["docker", "exec", "-i"];
  const argv = custom?.argv ?? [...exec, node.name, "bash", script];
  const env = { ...dockerEnv(node.dockerHost), ...(custom?.env ?? {}) };
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0], [...argv.slice(1), ...args], {
      env,
      stdio: [input === null ? "ignore" : "pipe", "pipe", "pipe"],
    });
    let out = "";
    let err = "";
    child.stdout?.on("data", (d) => (out += d));
    child.stderr?.on("data", (d) => (err += d));
    child.on("error", reject);
    child.stdin?.end(input);
    child.on("close", (code) => {
      if (code !== 0) {
        const name = script.split("/").at(-1);
        reject(new Error(`${node.name}: ${name} ${args[0]} failed (exit ${code}): ${err.trim()}`));
        return;
      }
      try {
        resolve(JSON.parse(out.trim().split("\n").pop() ?? ""));
      } catch {
        reject(new Error(`${node.name}: ctl.sh ${args[0]} printed no JSON: ${out}${err}`));
      }
    });
  });
}

/**
 * One query on a node in a fresh session, or null when the node does not answer now.
 * @param {TopologyNode} node @param {string} text @param {unknown[]} [params]
 */
export async function query(node, text, params = []) {
  // One attempt: a node that does not answer now is observed through ctl.sh instead.
  const client = await connect(node, Date.now());
  try {
    return (await client.query(text, params)).rows;
  } finally {
    await client.end();
  }
}

/** @param {TopologyNode} node @returns {Promise<SqlState | null>} */
export async function sqlState(node) {
  let rows;
  try {
    rows = await query(
      node,
      `SELECT pg_is_in_recovery() AS in_recovery,
              (SELECT system_identifier::text FROM pg_control_system()) AS sysid,
              pg_last_wal_replay_lsn()::text AS replay,
              CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END AS current,
              CASE WHEN pg_is_in_recovery() THEN pg_get_wal_replay_pause_state() END AS pause,
              current_setting('primary_conninfo') AS upstream,
              current_setting('primary_slot_name') AS upstream_slot,
              (SELECT row_to_json(r) FROM (SELECT status, sender_host, sender_port, received_tli
                 FROM pg_stat_wal_receiver) r) AS receiver`,
    );
  } catch (err) {
    if (/cannot connect/.test(String(err))) return null;
    throw err;
  }
  const r = rows[0];
  return {
    inRecovery: r.in_recovery,
    systemIdentifier: r.sysid,
    replayLsn: r.replay,
    currentLsn: r.current,
    pause: r.pause,
    upstream: r.upstream,
    upstreamSlot: r.upstream_slot,
    receiver: r.receiver
      ? {
          status: r.receiver.status,
          senderHost: r.receiver.sender_host,
          senderPort: r.receiver.sender_port,
          tli: r.receiver.received_tli,
        }
      : null,
  };
}

/** The node that is writable now, if any. @param {TopologyNode[]} nodes */
export async function writableNode(nodes) {
  const states = await Promise.all(nodes.map(async (n) => ({ n, s: await sqlState(n) })));
  return states.find((x) => x.s && !x.s.inRecovery)?.n;
}

/**
 * Waits until the node answers SQL, or its ctl status shows why it cannot (empty volume, held),
 * or the deadline passes (a populated node whose server does not come up is an error).
 * @param {TopologyNode} node @param {number} deadline @returns {Promise<Observed>}
 */
export async function observe(node, deadline) {
  for (;;) {
    const sql = await sqlState(node);
    if (sql) return { node, sql, ctl: null };
    const status = /** @type {CtlStatus} */ (await ctl(node, "status"));
    if (status.volume === "empty" || status.hold) return { node, sql: null, ctl: status };
    if (Date.now() >= deadline) {
      throw new Error(
        `${node.name} holds a cluster but its server did not accept connections (ctl status: ${JSON.stringify(status)}); check: docker logs ${node.name}`,
      );
    }
    await sleep(100);
  }
}

/** @param {string} lsn */
export function lsnBytes(lsn) {
  const [hi, lo] = lsn.split("/");
  return BigInt(`0x${hi}`) * 2n ** 32n + BigInt(`0x${lo}`);
}

/** The timeline a primary writes on (first 8 hex digits of its current WAL file). @param {TopologyNode} node */
export async function writeTimeline(node) {
  const [r] = await query(node, "SELECT pg_walfile_name(pg_current_wal_lsn()) AS f");
  return parseInt(r.f.slice(0, 8), 16);
}

/**
 * `primary_conninfo` for a standby named `standby` following `upstream` (see
 * {@link upstreamAddress}); the password comes from the node's passfile (wildcard host), never the
 * conninfo.
 * @param {TopologyNode} upstream @param {TopologyNode} standby
 */
export function conninfo(upstream, standby, database = "") {
  const at = upstreamAddress(upstream, standby);
  return [
    `host=${at.host}`,
    `port=${at.port}`,
    `user=${requireEnv("PGC_REPLICATION_USER")}`,
    ...(database ? [`dbname=${database}`] : []),
    `application_name=${standby.name}`,
    "connect_timeout=5 keepalives_idle=5 keepalives_interval=2 keepalives_count=3",
    // With TLS (PGC_TLS=on), the node verifies its upstream against the CA in its container.
    ...(process.env.PGC_TLS === "on" ? [`sslmode=verify-full sslrootcert=${CONTAINER_CA}`] : []),
  ].join(" ");
}

/**
 * The cluster's CA certificate inside every node's container, on its volume: components/tls.ts
 * CONTAINER_TLS_DIR, lib.sh PGC_TLS_DIR.
 */
export const CONTAINER_CA = "/var/lib/postgresql/data/conf/tls/ca.crt";

/**
 * Copies this run's assets into the node's container (`docker cp`, to /tmp), for a verb its own
 * ctl.sh, from an older release, lacks; returns the copied ctl.sh. Tests (PGC_CTL) run their own.
 * @param {TopologyNode} node @returns {Promise<string | undefined>}
 */
export async function copyAssets(node) {
  if (process.env.PGC_CTL) return undefined;
  const target = "/tmp/pg-cluster-assets";
  // The step's program (node roll.mjs) is in the assets directory.
  const here = path.dirname(path.resolve(process.argv[1]));
  const docker = (/** @type {string[]} */ args) =>
    new Promise((resolve, reject) => {
      const child = spawn("docker", args, {
        env: dockerEnv(node.dockerHost),
        stdio: ["ignore", "ignore", "pipe"],
      });
      let err = "";
      child.stderr.on("data", (d) => (err += d));
      child.on("error", reject);
      child.on("close", (code) =>
        code === 0
          ? resolve(undefined)
          : reject(
              new Error(`${node.name}: docker ${args[0]} of the assets failed: ${err.trim()}`),
            ),
      );
    });
  await docker(["cp", `${here}/.`, `${node.name}:${target}`]);
  // ctl.sh re-executes itself as postgres, who must read them whatever the checkout's modes.
  await docker(["exec", node.name, "chmod", "-R", "a+rX", target]);
  return `${target}/ctl.sh`;
}

/**
 * The certificate `node`'s server presents (DER), or null when it does not answer with TLS now:
 * PostgreSQL's SSLRequest, then a TLS handshake and no more (no login). Not verified: it is only
 * compared with the one the node should run (the handshake proves the server holds its key).
 * @param {TopologyNode} node @returns {Promise<Buffer | null>}
 */
export function servedCertificate(node) {
  return new Promise((resolve) => {
    const raw = net.connect({ host: node.host, port: node.port });
    /** @type {tls.TLSSocket | undefined} */
    let secure;
    const done = (/** @type {Buffer | null} */ cert) => {
      clearTimeout(timer);
      secure?.destroy();
      raw.destroy();
      resolve(cert);
    };
    const timer = setTimeout(() => done(null), 3000);
    raw.on("error", () => done(null));
    // SSLRequest: length 8, code 80877103.
    raw.on("connect", () => raw.write(Buffer.from([0, 0, 0, 8, 4, 210, 22, 47])));
    raw.once("data", (answer) => {
      if (answer[0] !== 0x53) return done(null);
      secure = tls.connect({ socket: raw, rejectUnauthorized: false, servername: undefined });
      secure.on("error", () => done(null));
      secure.on("secureConnect", () => done(secure?.getPeerCertificate()?.raw ?? null));
    });
  });
}

/**
 * Whether `node` already serves the certificate of its TLS bundle (PGC_TLS_FILES: CA, node
 * certificate, key): then `ctl.sh tls` would change nothing, and the docker exec is saved.
 * @param {TopologyNode} node
 */
export async function servesItsCertificate(node) {
  const bundle = process.env.PGC_TLS_FILES ? jsonEnv("PGC_TLS_FILES")[node.name] : undefined;
  const blocks = /** @type {string} */ (bundle ?? "").match(
    /-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g,
  );
  if (!blocks || blocks.length < 2) return false;
  const served = await servedCertificate(node);
  return served !== null && served.equals(new X509Certificate(blocks[1]).raw);
}

/**
 * Installs the node's TLS material (PGC_TLS_FILES, by node name) with `ctl.sh tls`, or removes it
 * when the cluster has no TLS, reloading the server when that changed anything. `script` is the
 * ctl.sh to run: the container's own, or one copied in by {@link copyAssets}.
 * @param {TopologyNode} node @param {string} [script] @returns {Promise<string>} what ctl.sh did
 */
export async function installTls(node, script) {
  const bundles = process.env.PGC_TLS_FILES ? jsonEnv("PGC_TLS_FILES") : {};
  const input = bundles[node.name] ?? "";
  if (process.env.PGC_TLS === "on" && !input) {
    throw new Error(`PGC_TLS_FILES has no TLS material for ${node.name}`);
  }
  const result = await runCtl(node, script ?? CONTAINER_CTL, input ? `${input}\n` : "", ["tls"]);
  if (result.tls !== "unchanged") {
    act(
      `${node.name}: TLS ${input ? "certificate installed" : "removed"} (configuration reloaded)`,
    );
  }
  return result.tls;
}

/**
 * Whether a standby's settings point at `upstream` through its own slot. Compared by host, port
 * and slot, not as text: ctl.sh writes the same connection with other options around it.
 * @param {SqlState} state @param {TopologyNode} upstream @param {TopologyNode} standby
 */
export function follows(state, upstream, standby) {
  const field = (/** @type {string} */ key) =>
    new RegExp(`(?:^|\\s)${key}=(\\S+)`).exec(state.upstream)?.[1].replace(/^'|'$/g, "");
  const at = upstreamAddress(upstream, standby);
  return (
    field("host") === at.host &&
    field("port") === String(at.port) &&
    // Turning TLS on or off re-points every standby, so that it verifies its upstream, or not.
    (field("sslmode") === "verify-full") === (process.env.PGC_TLS === "on") &&
    state.upstreamSlot === standby.slot
  );
}

/** Why `candidate` may not become the primary now (empty: it may). */
export async function candidateProblems(
  /** @type {TopologyNode} */ primary,
  /** @type {TopologyNode} */ candidate,
  /** @type {bigint} */ maxLag,
) {
  const c = await sqlState(candidate);
  if (!c) return [`${candidate.name} does not accept connections`];
  if (!c.inRecovery) return [`${candidate.name} is not a standby`];
  const problems = [];
  const tli = await writeTimeline(primary);
  const at = upstreamAddress(primary, candidate);
  if (
    c.receiver?.status !== "streaming" ||
    c.receiver.senderHost !== at.host ||
    c.receiver.senderPort !== at.port
  ) {
    problems.push(
      `${candidate.name} is not streaming from ${primary.name} (WAL receiver: ${JSON.stringify(c.receiver)})`,
    );
  } else if (c.receiver.tli !== tli) {
    problems.push(`${candidate.name} is on timeline ${c.receiver.tli}, the primary on ${tli}`);
  }
  // A paused standby of an idle primary shows no lag at all: check the pause itself.
  if (c.pause !== "not paused") {
    problems.push(
      `${candidate.name}'s WAL replay is ${c.pause} (resume it: SELECT pg_wal_replay_resume() on it)`,
    );
  }
  const [p] = await query(primary, "SELECT pg_current_wal_lsn()::text AS lsn");
  const lag = c.replayLsn === null ? null : lsnBytes(p.lsn) - lsnBytes(c.replayLsn);
  if (lag === null || lag > maxLag) {
    problems.push(
      `${candidate.name} is ${lag ?? "an unknown number of"} bytes behind the primary (limit ${maxLag}; wait for it to catch up, or raise switchoverMaxLag)`,
    );
  }
  return problems;
}

/** Creates a physical slot reserving WAL now, unless it exists. */
export async function ensureSlot(/** @type {TopologyNode} */ on, /** @type {string} */ slot) {
  const rows = await query(on, "SELECT 1 FROM pg_replication_slots WHERE slot_name = $1", [slot]);
  if (rows.length > 0) return;
  await query(on, "SELECT pg_create_physical_replication_slot($1, true)", [slot]);
  act(`created slot ${slot} on ${on.name}`);
}

/**
 * The router's check role: may log in to database postgres (pg_hba.conf) and nothing else. Its
 * checks end in a reset when a node has the wrong role, which it would log twice a second:
 * log_min_messages = fatal keeps those lines out of the node's log.
 * @param {TopologyNode} p
 */
export async function ensureHealthRole(p) {
  const password = process.env.PGC_HEALTH_PASSWORD;
  if (!password) return;
  const literal = `'${password.replace(/'/g, "''")}'`;
  const [r] = await query(
    p,
    "SELECT count(*)::int AS n FROM pg_roles WHERE rolname = 'pgc_health'",
  );
  await query(
    p,
    `${r.n === 0 ? "CREATE" : "ALTER"} ROLE pgc_health LOGIN CONNECTION LIMIT 16 PASSWORD ${literal}`,
  );
  if (r.n === 0) {
    await query(p, "ALTER ROLE pgc_health SET log_min_messages = fatal");
    act(`created role pgc_health for the router's checks on ${p.name}`);
  }
}

/**
 * Waits until `check` returns true or `ms` pass.
 * @param {string} what @param {number} ms @param {() => Promise<boolean>} check
 */
export async function waitUntil(what, ms, check) {
  const deadline = Date.now() + ms;
  let last = "";
  for (;;) {
    try {
      if (await check()) return;
    } catch (err) {
      last = ` (last error: ${err instanceof Error ? err.message : String(err)})`;
    }
    if (Date.now() >= deadline) throw new Error(`timed out after ${ms} ms: ${what}${last}`);
    await sleep(50);
  }
}

/**
 * How long read-only sessions on a switchover's candidate may finish before they are ended: short
 * sessions (a query each) are gone within it; a pooled session that stays is ended anyway.
 */
const SWITCHOVER_DRAIN_MS = 2000;

/**
 * Planned switchover from `p` to `c`: refuse unless `c` is a caught-up streaming standby; then
 * stop `p` cleanly and promote `c` once it holds `p`'s last WAL.
 */
export async function switchover(
  /** @type {TopologyNode} */ p,
  /** @type {TopologyNode} */ c,
  /** @type {TopologyNode[]} */ nodes,
  /** @type {number} */ timeoutMs,
) {
  const maxLag = BigInt(process.env.PGC_SWITCHOVER_MAX_LAG_BYTES ?? String(16 * 1024 * 1024));
  const problems = await candidateProblems(p, c, maxLag);
  if (problems.length > 0) {
    throw new Refusal(
      `switchover to ${c.name} refused, nothing changed: ${problems.join("; ")}. Or set primary to another node (nodes: ${nodes.map((n) => n.name).join(", ")}).`,
    );
  }
  // Every other node's slot on the candidate first, so no standby needs a re-clone after.
  for (const q of nodes) if (q !== c) await ensureSlot(c, q.slot);
  act(`switchover ${p.name} -> ${c.name}: stopping ${p.name} (fast, after a checkpoint)`);
  // Read-only clients leave the candidate (new sessions go elsewhere at once; open ones may
  // finish their work for a moment), and a checkpoint shortens the one the stop makes, while the
  // primary still takes writes.
  await drainStandby(c, SWITCHOVER_DRAIN_MS);
  await query(p, "CHECKPOINT");
  const stopped = /** @type {CtlStatus} */ (await ctl(p, "demote"));
  // In parallel with the promotion: new write sessions stop going to the stopped node. (Telling
  // the router before the stop lengthened the write gap by the stop itself: measured.)
  const told = tellRouter(`set server primary/${p.name} health down`);
  await promoteAfter(c, p, stopped, timeoutMs);
  await told;
}

/**
 * Promotes `c` once it has replayed past the cleanly stopped old primary's shutdown checkpoint;
 * if it does not get there, the old primary is made writable again (c never was) and the step fails.
 */
export async function promoteAfter(
  /** @type {TopologyNode} */ c,
  /** @type {TopologyNode} */ p,
  /** @type {CtlStatus} */ stopped,
  /** @type {number} */ timeoutMs,
) {
  if (stopped.state !== "shut down" || !stopped.checkpointLsn) {
    // Not a clean stop (a crash): its last WAL is unknown, so it must stay the primary.
    await ctl(p, "undemote");
    await tellRouter(`set server standbys/${c.name} state ready`);
    throw new Error(
      `${p.name} did not stop cleanly (state: ${stopped.state}); it was started again as the primary and nothing was promoted. Run pulumi up again.`,
    );
  }
  const end = lsnBytes(stopped.checkpointLsn);
  try {
    await waitUntil(
      `${c.name} to replay ${p.name}'s shutdown checkpoint ${stopped.checkpointLsn}`,
      Math.min(timeoutMs, 30_000),
      async () => {
        const s = await sqlState(c);
        return !!s?.replayLsn && lsnBytes(s.replayLsn) > end;
      },
    );
  } catch (err) {
    await ctl(p, "undemote");
    await tellRouter(`set server standbys/${c.name} state ready`);
    throw new Error(
      `${c.name} did not receive ${p.name}'s last WAL, so ${p.name} was made the primary again and nothing was lost: ${err instanceof Error ? err.message : String(err)}`,
    );
  }
  await promote(c, `the old primary's last WAL ${stopped.checkpointLsn} replayed`);
}

/**
 * Runs commands on the router's runtime API (HAProxy's stats socket, on loopback in the router)
 * and returns what it answered (null without a router, or when it could not be reached).
 * Never fatal: the router's own role checks reach the same state within a second; this only
 * makes it immediate.
 * @param {string[]} commands @returns {Promise<string | null>}
 */
export async function tellRouter(...commands) {
  const line = commands.join("; ");
  const out = await routerApi(line);
  if (out?.trim()) log(`router (${line}): ${out.trim()}`);
  return out;
}

/**
 * One line to the router's runtime API; its answer, or null. @param {string} line
 * @returns {Promise<string | null>}
 */
function routerApi(line) {
  const custom = process.env.PGC_ROUTER_ARGV ? jsonEnv("PGC_ROUTER_ARGV") : undefined;
  const router = process.env.PGC_ROUTER;
  if (!custom && !router) return Promise.resolve(null);
  const script = 'exec 3<>/dev/tcp/127.0.0.1/9999 && printf "%s\n" "$1" >&3 && timeout 2 cat <&3';
  const argv = custom ?? ["docker", "exec", router, "bash", "-c", script, "_"];
  return new Promise((resolve) => {
    const child = spawn(argv[0], [...argv.slice(1), line], {
      env: dockerEnv(process.env.PGC_ROUTER_DOCKER_HOST),
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    let err = "";
    child.stdout.on("data", (d) => (out += d));
    child.stderr.on("data", (d) => (err += d));
    child.on("error", (e) => {
      log(`router not reached (${line}): ${e.message}`);
      resolve(null);
    });
    child.on("close", (code) => {
      if (code === 0) return resolve(out);
      log(`router not reached (${line}): exit ${code} ${err.trim()}`);
      resolve(null);
    });
  });
}

/**
 * Takes a standby out of the router's read-only backend for a while (its container is about to
 * be replaced): new sessions go to the other standbys at once; sessions already on it get up to
 * `graceMs` to finish, then are ended. Returns how many were still open when the grace ran out.
 * HAProxy's `drain` state, not `maint`: entering maintenance counts as going down, and with
 * `on-marked-down shutdown-sessions` that ends every session on the server at once, including a
 * client's that is still starting up (psql readers saw "server closed the connection
 * unexpectedly" as the roll drained a standby).
 * `replacing`: the node's container is about to be replaced, so every session on it will end;
 * idle ones (a pool's) end at once rather than after the grace, and reconnect to another
 * standby. (Not for a switchover's candidate: sessions made to its own port stay.)
 * @param {TopologyNode} node @param {number} graceMs @param {boolean} [replacing]
 * @returns {Promise<number>}
 */
export async function drainStandby(node, graceMs, replacing = false) {
  if ((await tellRouter(`set server standbys/${node.name} state drain`)) === null) return 0;
  const deadline = Date.now() + graceMs;
  let open = 0;
  for (;;) {
    if (replacing) await endIdleSessions(node);
    // `show stat` is CSV: pxname, svname, qcur, qmax, scur (current sessions), ...
    const stat = (await routerApi("show stat")) ?? "";
    const row = stat.split("\n").find((l) => l.startsWith(`standbys,${node.name},`));
    open = row ? Number(row.split(",")[4]) : 0;
    if (open === 0 || Date.now() >= deadline) break;
    await sleep(100);
  }
  // Then maintenance, as before a replacement or a promotion (its checks stop) until a gate or
  // the topology step sets it ready again; any session still open is ended.
  await tellRouter(
    `set server standbys/${node.name} state maint`,
    ...(open > 0 ? [`shutdown sessions server standbys/${node.name}`] : []),
  );
  return open;
}

/**
 * Ends the client sessions on `node` that have been idle (not in a query, not in a transaction)
 * for half a second, but the router's checks and this step's own. Not sooner: a session that has
 * just logged in is idle until its first query arrives (a psql reader's is, for a few ms). Never
 * fatal: the grace and the shutdown still follow.
 * @param {TopologyNode} node
 */
async function endIdleSessions(node) {
  try {
    const [r] = await query(
      node,
      `SELECT count(pg_terminate_backend(pid)) AS ended FROM pg_stat_activity
        WHERE backend_type = 'client backend' AND state = 'idle'
          AND state_change < clock_timestamp() - interval '500 milliseconds'
          AND pid <> pg_backend_pid() AND usename <> 'pgc_health'`,
    );
    if (Number(r.ended) > 0) log(`${node.name}: ended ${r.ended} idle session(s) as it drains`);
  } catch (err) {
    log(
      `${node.name}: idle sessions not ended (${err instanceof Error ? err.message : String(err)})`,
    );
  }
}

/**
 * Takes a standby out of the router's read-only backend and ends the sessions it had there, so
 * no read-only client is on it when it becomes writable. @param {TopologyNode} c
 */
export function leaveStandbys(c) {
  return tellRouter(
    `set server standbys/${c.name} state maint`,
    `shutdown sessions server standbys/${c.name}`,
  );
}

/**
 * Promotes a standby and leaves it with no upstream settings. The caller has taken it out of the
 * router's read-only backend first (leaveStandbys): a switchover does so before it stops the old
 * primary, so that call is not repeated inside the write pause.
 * @param {TopologyNode} c @param {string} why
 */
export async function promote(c, why) {
  await query(c, "SELECT pg_promote(true, 60)");
  // New sessions for writes go to it now. It stays out of the standbys administratively (a
  // server leaving maintenance counts as up until its next check): converge lets it back in
  // once it is a standby again.
  await tellRouter(`set server primary/${c.name} health up`);
  // pg_rewind reads the new primary's timeline from its control file: make it current now.
  await query(c, "CHECKPOINT");
  await query(c, "ALTER SYSTEM RESET primary_conninfo");
  await query(c, "ALTER SYSTEM RESET primary_slot_name");
  await query(c, "SELECT pg_reload_conf()");
  act(`promoted ${c.name} (${why})`);
}
