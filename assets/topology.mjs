// @ts-check
/**
 * The cluster's topology step (docs/design/primary-as-role.md): makes the node named in
 * PGC_DESIRED_PRIMARY the primary and every other node its streaming standby. It keeps no memory
 * between runs: it observes every node, then continues from wherever the cluster is, so a re-run
 * after a failure converges. A node becomes writable only by `pg_promote` after the old primary
 * was proven stopped cleanly and the candidate replayed its last WAL, or by undoing a demotion
 * while the candidate is still a standby: never two writable primaries.
 *
 * What SQL cannot do (stop a server, pg_rewind, bootstrap an empty volume) goes through the node's
 * own `ctl.sh`, by `docker exec` (or PGC_CTL in tests).
 *
 * Environment (set by the PostgresCluster component):
 *   PGC_NODES            [{"name","host","port","internalHost","internalPort"?,"slot"}, ...]
 *                        (host:port as the step reaches the node; internalHost:internalPort as
 *                        the other nodes do, on the cluster network: its name and 5432)
 *   PGC_DESIRED_PRIMARY  a node name
 *   PGC_SUPERUSER, PGC_SUPERUSER_PASSWORD, PGC_DATABASE, PGC_REPLICATION_USER
 *   PGC_SYNCHRONOUS_REPLICAS  k for `ANY k (...)` over the standbys (0: asynchronous)
 *   PGC_SWITCHOVER_MAX_LAG_BYTES  refuse a candidate further behind (default 16 MiB)
 *   PGC_SETTINGS         {"<setting>": "<size>", ...}: reloadable size settings every node must
 *                        have; set by ALTER SYSTEM and pg_reload_conf(), never by a restart
 *   PGC_TIMEOUT_SECONDS  bound on waiting for a node (default 120)
 *   PGC_CTL              optional {"<node>": {"argv": [...], "env": {...}}}: how to run a node's
 *                        ctl.sh (default: docker exec <node> bash /opt/pg-cluster/ctl.sh)
 *   PGC_HEALTH_PASSWORD  password of the router's check role, pgc_health (made on the primary)
 *   PGC_ROUTER           optional: the router container; its runtime API is told of a switchover
 *                        the moment it happens (PGC_ROUTER_ARGV: a JSON argv that takes the
 *                        command as its last argument, instead of docker exec)
 * Prints one JSON line: {"primary", "timeline", "actions": [...], "nodes": [{"name","role"}]}.
 */
import { spawn } from "node:child_process";
import { connect, jsonEnv, log, requireEnv, sleep } from "./pgnode.mjs";

/**
 * @typedef {{ name: string, host: string, port: number, internalHost: string,
 *   internalPort?: number, slot: string }} TopologyNode
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

const CONTAINER_PORT = 5432;
/** Where the other nodes reach `node`. @param {TopologyNode} node */
const internalPort = (node) => node.internalPort ?? CONTAINER_PORT;
const actions = /** @type {string[]} */ ([]);

/** @param {string} what */
function act(what) {
  actions.push(what);
  log(what);
}

/** A refusal: nothing was changed, and the message says what to do. */
class Refusal extends Error {}

/**
 * Runs a verb of a node's ctl.sh and returns the one JSON line it prints.
 * @param {TopologyNode} node @param {string[]} args @returns {Promise<any>}
 */
function ctl(node, ...args) {
  const custom = process.env.PGC_CTL ? jsonEnv("PGC_CTL")[node.name] : undefined;
  const argv = custom?.argv ?? ["docker", "exec", node.name, "bash", "/opt/pg-cluster/ctl.sh"];
  const env = { ...process.env, ...(custom?.env ?? {}) };
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0], [...argv.slice(1), ...args], {
      env,
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    let err = "";
    child.stdout.on("data", (d) => (out += d));
    child.stderr.on("data", (d) => (err += d));
    child.on("error", reject);
    child.on("close", (code) => {
      if (code !== 0) {
        reject(new Error(`${node.name}: ctl.sh ${args[0]} failed (exit ${code}): ${err.trim()}`));
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
async function query(node, text, params = []) {
  // One attempt: a node that does not answer now is observed through ctl.sh instead.
  const client = await connect(node, Date.now());
  try {
    return (await client.query(text, params)).rows;
  } finally {
    await client.end();
  }
}

/** @param {TopologyNode} node @returns {Promise<SqlState | null>} */
async function sqlState(node) {
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

/**
 * Waits until the node answers SQL, or its ctl status shows why it cannot (empty volume, held),
 * or the deadline passes (a populated node whose server does not come up is an error).
 * @param {TopologyNode} node @param {number} deadline @returns {Promise<Observed>}
 */
async function observe(node, deadline) {
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
function lsnBytes(lsn) {
  const [hi, lo] = lsn.split("/");
  return BigInt(`0x${hi}`) * 2n ** 32n + BigInt(`0x${lo}`);
}

/** The timeline a primary writes on (first 8 hex digits of its current WAL file). @param {TopologyNode} node */
async function writeTimeline(node) {
  const [r] = await query(node, "SELECT pg_walfile_name(pg_current_wal_lsn()) AS f");
  return parseInt(r.f.slice(0, 8), 16);
}

/**
 * `primary_conninfo` for a standby named `standby` following `upstream` on the cluster network;
 * the password comes from the node's passfile (wildcard host), never the conninfo.
 * @param {TopologyNode} upstream @param {TopologyNode} standby
 */
function conninfo(upstream, standby, database = "") {
  return [
    `host=${upstream.internalHost}`,
    `port=${internalPort(upstream)}`,
    `user=${requireEnv("PGC_REPLICATION_USER")}`,
    ...(database ? [`dbname=${database}`] : []),
    `application_name=${standby.name}`,
    "connect_timeout=5 keepalives_idle=5 keepalives_interval=2 keepalives_count=3",
  ].join(" ");
}

/**
 * Whether a standby's settings point at `upstream` through its own slot. Compared by host, port
 * and slot, not as text: ctl.sh writes the same connection with other options around it.
 * @param {SqlState} state @param {TopologyNode} upstream @param {TopologyNode} standby
 */
function follows(state, upstream, standby) {
  const field = (/** @type {string} */ key) =>
    new RegExp(`(?:^|\\s)${key}=(\\S+)`).exec(state.upstream)?.[1].replace(/^'|'$/g, "");
  return (
    field("host") === upstream.internalHost &&
    field("port") === String(internalPort(upstream)) &&
    state.upstreamSlot === standby.slot
  );
}

/** Why `candidate` may not become the primary now (empty: it may). */
async function candidateProblems(
  /** @type {TopologyNode} */ primary,
  /** @type {TopologyNode} */ candidate,
  /** @type {bigint} */ maxLag,
) {
  const c = await sqlState(candidate);
  if (!c) return [`${candidate.name} does not accept connections`];
  if (!c.inRecovery) return [`${candidate.name} is not a standby`];
  const problems = [];
  const tli = await writeTimeline(primary);
  if (
    c.receiver?.status !== "streaming" ||
    c.receiver.senderHost !== primary.internalHost ||
    c.receiver.senderPort !== internalPort(primary)
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
async function ensureSlot(/** @type {TopologyNode} */ on, /** @type {string} */ slot) {
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
async function ensureHealthRole(p) {
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
async function waitUntil(what, ms, check) {
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
 * Planned switchover from `p` to `c`: refuse unless `c` is a caught-up streaming standby; then
 * stop `p` cleanly and promote `c` once it holds `p`'s last WAL.
 */
async function switchover(
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
  // Read-only clients leave the candidate, and a checkpoint shortens the one the stop makes,
  // while the primary still takes writes.
  await leaveStandbys(c);
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
async function promoteAfter(
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
 * Runs commands on the router's runtime API (HAProxy's stats socket, on loopback in the router).
 * Never fatal: the router's own role checks reach the same state within a second; this only
 * makes it immediate.
 * @param {string[]} commands
 */
async function tellRouter(...commands) {
  const custom = process.env.PGC_ROUTER_ARGV ? jsonEnv("PGC_ROUTER_ARGV") : undefined;
  const router = process.env.PGC_ROUTER;
  if (!custom && !router) return;
  const script = 'exec 3<>/dev/tcp/127.0.0.1/9999 && printf "%s\n" "$1" >&3 && timeout 2 cat <&3';
  const argv = custom ?? ["docker", "exec", router, "bash", "-c", script, "_"];
  const line = commands.join("; ");
  await new Promise((resolve) => {
    const child = spawn(argv[0], [...argv.slice(1), line], { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    child.stdout.on("data", (d) => (out += d));
    child.stderr.on("data", (d) => (out += d));
    child.on("error", (err) => {
      log(`router not told (${line}): ${err.message}`);
      resolve(undefined);
    });
    child.on("close", (code) => {
      if (code !== 0 || out.trim()) log(`router (${line}): exit ${code} ${out.trim()}`);
      resolve(undefined);
    });
  });
}

/**
 * Takes a standby out of the router's read-only backend and ends the sessions it had there, so
 * no read-only client is on it when it becomes writable. @param {TopologyNode} c
 */
function leaveStandbys(c) {
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
async function promote(c, why) {
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

/**
 * With `p` the primary: every other node streams from it through its own slot (an empty one is
 * cloned, a demoted one rewound and released, a standby re-pointed by a reload), stale slots are
 * dropped and synchronous_standby_names follows.
 */
async function converge(
  /** @type {TopologyNode} */ p,
  /** @type {Observed[]} */ seen,
  /** @type {number} */ timeoutMs,
) {
  const others = seen.filter((o) => o.node !== p);
  await ensureHealthRole(p);
  for (const o of others) await ensureSlot(p, o.node.slot);
  await Promise.all(
    others.map(async (o) => {
      const q = o.node;
      if (o.ctl?.volume === "empty") {
        act(`cloning ${q.name} from ${p.name}`);
        await ctl(q, "bootstrap-clone", p.internalHost, String(internalPort(p)));
      } else if (o.ctl?.hold) {
        act(`${q.name} rejoins as a standby of ${p.name} (pg_rewind when needed)`);
        await ctl(q, "follow", p.internalHost, String(internalPort(p)));
        try {
          const rewound = await ctl(q, "rewind", conninfo(p, q, "postgres"));
          act(`${q.name}: rewind ${rewound.rewind ?? "done"}`);
        } catch (err) {
          // pg_rewind cannot always work (the node's WAL since the fork may be gone): a fresh
          // copy of the primary, swapped in only when complete, always does.
          const why = (err instanceof Error ? err.message : String(err)).split("\n")[0];
          act(`${q.name}: pg_rewind failed (${why}); cloning it again from ${p.name}`);
          await ctl(q, "reclone", p.internalHost, String(internalPort(p)));
        }
        await ctl(q, "release");
      } else if (o.sql && !follows(o.sql, p, q)) {
        await query(q, `ALTER SYSTEM SET primary_conninfo = '${conninfo(p, q)}'`);
        await query(q, `ALTER SYSTEM SET primary_slot_name = '${q.slot}'`);
        await query(q, "SELECT pg_reload_conf()");
        act(`${q.name} now follows ${p.name} (reload, no restart)`);
      }
    }),
  );
  await Promise.all(
    others.map((o) =>
      waitUntil(`${o.node.name} to stream from ${p.name}`, timeoutMs, async () => {
        const s = await sqlState(o.node);
        return !!s?.inRecovery && s.receiver?.status === "streaming";
      }),
    ),
  );
  // Slots: on the primary, keep the current nodes' ones; on a standby, none is in use.
  const keep = new Set(others.map((o) => o.node.slot));
  for (const o of [{ node: p }, ...others]) {
    const rows = await query(
      o.node,
      "SELECT slot_name FROM pg_replication_slots WHERE slot_type = 'physical' AND NOT active",
    );
    for (const { slot_name } of rows) {
      if (o.node === p && keep.has(slot_name)) continue;
      await query(o.node, "SELECT pg_drop_replication_slot($1)", [slot_name]);
      act(`dropped stale slot ${slot_name} on ${o.node.name}`);
    }
  }
  await applySettings([p, ...others.map((o) => o.node)]);
  // The router's read-only backend: every streaming standby in, the primary out (also after a
  // run that stopped half-way).
  await tellRouter(
    `set server standbys/${p.name} state maint`,
    ...others.map((o) => `set server standbys/${o.node.name} state ready`),
  );
  const k = Number(process.env.PGC_SYNCHRONOUS_REPLICAS ?? "0");
  const names = k === 0 ? "" : `ANY ${k} (${others.map((o) => `"${o.node.name}"`).join(", ")})`;
  const [cur] = await query(p, "SELECT current_setting('synchronous_standby_names') AS v");
  if (cur.v !== names) {
    await query(p, `ALTER SYSTEM SET synchronous_standby_names = '${names}'`);
    await query(p, "SELECT pg_reload_conf()");
    // A reload is asynchronous: wait until new sessions and the WAL senders use it, so the
    // post-step's report (and the first commit after the up) see it.
    await waitUntil(`synchronous_standby_names = '${names}' on ${p.name}`, 10_000, async () => {
      const [r] = await query(
        p,
        `SELECT current_setting('synchronous_standby_names') AS v,
                (SELECT count(*) FROM pg_stat_replication WHERE sync_state IN ('sync', 'quorum'))::int AS sync`,
      );
      return r.v === names && (k === 0 ? r.sync === 0 : r.sync >= Math.min(k, others.length));
    });
    act(`synchronous_standby_names = '${names}' on ${p.name}`);
  }
}

/**
 * Every node gets the reloadable settings asked for (PGC_SETTINGS): `ALTER SYSTEM` where a value
 * differs (compared as sizes, so "1024MB" is "1GB"), then `pg_reload_conf()`, and a wait until
 * new sessions see it. No restart: these are `sighup` settings.
 * @param {TopologyNode[]} nodes
 */
async function applySettings(nodes) {
  /** @type {Record<string, string>} */
  const wanted = process.env.PGC_SETTINGS ? jsonEnv("PGC_SETTINGS") : {};
  const entries = Object.entries(wanted);
  if (entries.length === 0) return;
  const differing = async (/** @type {TopologyNode} */ node) => {
    const names = [];
    for (const [name, value] of entries) {
      const [r] = await query(
        node,
        "SELECT pg_size_bytes(current_setting($1)) = pg_size_bytes($2) AS same",
        [name, value],
      );
      if (!r.same) names.push(name);
    }
    return names;
  };
  await Promise.all(
    nodes.map(async (node) => {
      const names = await differing(node);
      if (names.length === 0) return;
      // Names come from the component's fixed list, values are validated sizes.
      for (const name of names) await query(node, `ALTER SYSTEM SET ${name} = '${wanted[name]}'`);
      await query(node, "SELECT pg_reload_conf()");
      await waitUntil(`${names.join(", ")} reloaded on ${node.name}`, 10_000, async () => {
        return (await differing(node)).length === 0;
      });
      act(
        `${node.name}: ${names.map((n) => `${n} = ${wanted[n]}`).join(", ")} (reload, no restart)`,
      );
    }),
  );
}

/**
 * No node is writable: an earlier run stopped the old primary and did not finish, or the primary's
 * volume is gone. Makes the desired node the primary only when that cannot lose a commit: every
 * populated node answers (or is held by us), and no standby has replayed more than it. Returns the
 * node that is writable after it: the desired one, or an old primary started again because its
 * demotion was cut short by a crash (the caller then moves the primary by a switchover).
 * @param {Observed[]} seen @param {Observed} desiredSeen
 * @returns {Promise<TopologyNode>}
 */
async function withoutWritableNode(seen, desiredSeen) {
  const desired = desiredSeen.node;
  const silent = seen.filter(
    (o) => o !== desiredSeen && !o.sql && !o.ctl?.hold && o.ctl?.volume === "populated",
  );
  if (silent.length > 0) {
    throw new Error(
      `no node is writable, and ${silent.map((o) => o.node.name).join(", ")} hold the cluster but do not answer, so ${desired.name} cannot be made the primary safely; nothing was changed. Start them (docker start), then pulumi up.`,
    );
  }
  if (desiredSeen.ctl?.hold) {
    // An earlier run stopped this node to move the primary away and did not finish, and it is
    // wanted as the primary again. No node is writable and every populated node answers, so none
    // was promoted in its place: starting it as the primary again is safe.
    await ctl(desired, "undemote");
    act(`${desired.name} was stopped by an unfinished switchover; it is the primary again`);
    return desired;
  }
  const held = seen.find((o) => o !== desiredSeen && o.ctl?.hold);
  if (held?.ctl) {
    // An earlier run stopped this old primary for a switchover and did not finish. If it stopped
    // cleanly and the candidate has replayed its shutdown checkpoint (its last WAL), the
    // candidate holds every commit: promote it. Otherwise (a crash during the stop, or WAL the
    // candidate never received) only the old primary has it: no node is writable and none was
    // promoted, so start it as the primary again, and the switchover starts over.
    const end = held.ctl.state === "shut down" ? held.ctl.checkpointLsn : null;
    const replayed = desiredSeen.sql?.replayLsn;
    if (end && desiredSeen.sql?.inRecovery && replayed && lsnBytes(replayed) > lsnBytes(end)) {
      await leaveStandbys(desired);
      await promote(desired, `it had replayed ${held.node.name}'s shutdown checkpoint ${end}`);
      return desired;
    }
    await ctl(held.node, "undemote");
    act(
      `${held.node.name} was stopped by an unfinished switchover (state: ${held.ctl.state}) and ${desired.name} lacks its last WAL; it is the primary again, and the switchover starts over`,
    );
    return held.node;
  }
  if (!desiredSeen.sql?.inRecovery || !desiredSeen.sql.replayLsn) {
    throw new Error(
      `no node is writable and ${desired.name} is not a standby that answers; nothing was changed.`,
    );
  }
  const mine = lsnBytes(desiredSeen.sql.replayLsn);
  const ahead = seen.find(
    (o) => o.sql?.inRecovery && o.sql.replayLsn && lsnBytes(o.sql.replayLsn) > mine,
  );
  if (ahead) {
    throw new Refusal(
      `${ahead.node.name} has replayed more WAL (${ahead.sql?.replayLsn}) than ${desired.name} (${desiredSeen.sql.replayLsn}); nothing was changed. Set primary to ${ahead.node.name}, then pulumi up.`,
    );
  }
  await leaveStandbys(desired);
  await promote(desired, "no other node holds newer WAL");
  return desired;
}

/** @param {Observed[]} seen @param {TopologyNode} desired */
function lostPrimary(seen, desired) {
  const holders = seen.filter((o) => o.sql || o.ctl?.volume === "populated");
  const best = holders
    .filter((o) => o.sql?.replayLsn)
    .sort((a, b) =>
      Number(lsnBytes(b.sql?.replayLsn ?? "0/0") - lsnBytes(a.sql?.replayLsn ?? "0/0")),
    )[0];
  return new Refusal(
    `the primary ${desired.name} has an empty data volume, but ${holders.map((o) => o.node.name).join(" and ")} hold this cluster` +
      (best ? ` (most advanced: ${best.node.name}, replayed ${best.sql?.replayLsn})` : "") +
      `. Nothing was changed and no database was created. To recover, make the most advanced replica the primary: pulumi config set primary ${best?.node.name ?? "<a replica>"}, then pulumi up; ${desired.name} will be re-cloned from it as a standby.`,
  );
}

async function main() {
  /** @type {TopologyNode[]} */
  const nodes = jsonEnv("PGC_NODES");
  const desired = nodes.find((n) => n.name === requireEnv("PGC_DESIRED_PRIMARY"));
  if (!desired) throw new Error(`PGC_DESIRED_PRIMARY is not one of PGC_NODES`);
  const timeoutMs = Number(process.env.PGC_TIMEOUT_SECONDS ?? "120") * 1000;
  const deadline = Date.now() + timeoutMs;

  let seen = await Promise.all(nodes.map((n) => observe(n, deadline)));
  const populated = seen.filter((o) => o.sql || o.ctl?.volume === "populated");
  if (populated.length === 0) {
    act(`new cluster: initdb on ${desired.name}`);
    await ctl(desired, "bootstrap-initdb");
    seen = await Promise.all(nodes.map((n) => observe(n, deadline)));
  }
  const ids = new Set(
    seen.map((o) => o.sql?.systemIdentifier ?? o.ctl?.systemIdentifier).filter(Boolean),
  );
  if (ids.size > 1) {
    throw new Refusal(
      `the nodes hold different clusters (system identifiers: ${seen.map((o) => `${o.node.name}=${o.sql?.systemIdentifier ?? o.ctl?.systemIdentifier ?? "empty"}`).join(", ")}); nothing was changed. Remove the volume of the node that does not belong, or restore it.`,
    );
  }
  const desiredSeen = /** @type {Observed} */ (seen.find((o) => o.node === desired));
  if (desiredSeen.ctl?.volume === "empty") throw lostPrimary(seen, desired);

  const writable = seen.filter((o) => o.sql && !o.sql.inRecovery);
  if (writable.length > 1) {
    throw new Error(
      `two writable primaries: ${writable.map((o) => o.node.name).join(", ")}; nothing was changed. Stop the one that should not be written to (docker stop), then run pulumi up.`,
    );
  }
  const primary =
    writable.length === 0 ? await withoutWritableNode(seen, desiredSeen) : writable[0].node;
  if (primary !== desired) {
    if (writable.length === 0) {
      // Started again just now: its standbys reconnect within a second or two.
      await waitUntil(`${desired.name} to stream from ${primary.name} again`, 30_000, async () => {
        const s = await sqlState(desired);
        return s?.receiver?.status === "streaming";
      }).catch(() => {}); // if not, the switchover's preconditions say why
    }
    await switchover(primary, desired, nodes, timeoutMs);
  }
  seen = await Promise.all(nodes.map((n) => observe(n, deadline)));
  await converge(desired, seen, timeoutMs);
  const timeline = await writeTimeline(desired);
  process.stdout.write(
    `${JSON.stringify({
      primary: desired.name,
      timeline,
      actions,
      nodes: nodes.map((n) => ({ name: n.name, role: n === desired ? "primary" : "standby" })),
    })}\n`,
  );
}

main().catch((err) => {
  log(`ERROR: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
});
