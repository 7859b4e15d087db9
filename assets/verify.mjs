// @ts-check
/**
 * The cluster's post-step. Seeds the tutorial's Wizards table idempotently, writes a marker on the
 * primary and waits (bounded, see PGC_TIMEOUT_SECONDS) until every replica has replayed past the
 * primary's LSN after that write. Prints one JSON report on stdout; exits non-zero naming any replica that did not catch up.
 *
 * Environment (set by the PostgresCluster component):
 *   PGC_NODES          [{"name","host","port","internalHost","slot"}, ...]
 *   PGC_DESIRED_PRIMARY  the node that must be the primary (the topology step made it so); every
 *                      other node is checked as its standby
 *   PGC_SUPERUSER, PGC_SUPERUSER_PASSWORD, PGC_DATABASE
 *   PGC_NODE_CONTAINERS      "1": each node is the Docker container of its name (docker CLI with the
 *                            environment's DOCKER_HOST), so the report can say it was replaced
 *   PGC_TOPOLOGY_RESULT      not read: the topology step's output, in the environment so that a
 *                            run of that step which changed something re-runs this one
 *   PGC_ROUTER_ENDPOINTS     optional {"readWrite": {"host","port"}, "readOnly": {...}}: the
 *                            router's endpoints, each proven to reach a node of the right role
 *   PGC_BACKUP               "on" with backups: the report has the primary's WAL archiver
 *   PGC_TIMEOUT_SECONDS      (default 120) the primary must accept connections within this long
 *                            of the step's start; a replica may go this long without progress
 *                            (its clone or its replay advancing), so a clone of a large primary
 *                            is waited out as long as it advances
 */
import { spawnSync } from "node:child_process";
import { randomUUID } from "node:crypto";
import { changeSince, connect, dockerEnv, jsonEnv, log, requireEnv, sleep } from "./pgnode.mjs";

/** The tutorial's three rows. */
const WIZARDS = [
  ["Harry", "Potter", "harry.potter@hogwarts.edu"],
  ["Ron", "Weasley", "ron.weasley@hogwarts.edu"],
  ["Hermione", "Granger", "hermione.granger@hogwarts.edu"],
];

/** @param {import("pg").Client} client @returns {Promise<number>} rows inserted */
async function seed(client) {
  await client.query("BEGIN");
  try {
    await client.query(`CREATE TABLE IF NOT EXISTS wizards (
      id SERIAL PRIMARY KEY, firstname VARCHAR(50), lastname VARCHAR(50), email VARCHAR(100))`);
    // Serialises concurrent post-steps so two runs cannot both see a row missing and insert it.
    await client.query("LOCK TABLE wizards IN SHARE ROW EXCLUSIVE MODE");
    const values = WIZARDS.map((_, i) => `($${3 * i + 1}, $${3 * i + 2}, $${3 * i + 3})`).join(
      ", ",
    );
    const inserted = await client.query(
      `INSERT INTO wizards (firstname, lastname, email)
       SELECT v.f, v.l, v.e FROM (VALUES ${values}) AS v(f, l, e)
       WHERE NOT EXISTS (SELECT 1 FROM wizards w WHERE w.email = v.e)`,
      WIZARDS.flat(),
    );
    await client.query("COMMIT");
    return inserted.rowCount ?? 0;
  } catch (err) {
    await client.query("ROLLBACK").catch(() => {});
    throw err;
  }
}

/** @param {import("pg").Client} client @param {string} runId @returns {Promise<string>} LSN after the marker */
async function writeMarker(client, runId) {
  await client.query("CREATE SCHEMA IF NOT EXISTS pgcluster");
  await client.query(`CREATE TABLE IF NOT EXISTS pgcluster.marker (
    id int PRIMARY KEY, run_id text NOT NULL, written_at timestamptz NOT NULL)`);
  await client.query(
    `INSERT INTO pgcluster.marker VALUES (1, $1, now())
     ON CONFLICT (id) DO UPDATE SET run_id = EXCLUDED.run_id, written_at = EXCLUDED.written_at`,
    [runId],
  );
  return (await client.query("SELECT pg_current_wal_lsn()::text AS lsn")).rows[0].lsn;
}

/**
 * A deadline that moves: it is PGC_TIMEOUT_SECONDS after the last sign of progress, so the step
 * fails fast on a node that is stuck, yet waits out a long clone of a large primary.
 */
class Patience {
  /** @param {number} timeoutMs */
  constructor(timeoutMs) {
    this.timeoutMs = timeoutMs;
    this.deadline = Date.now() + timeoutMs;
    /** @type {Map<string, number>} */
    this.best = new Map();
  }

  /**
   * Records a measure that only grows while work gets done (bytes cloned, WAL replayed). Only a
   * new high is progress: a clone that failed and starts over from 0 does not move the deadline.
   * @param {string} measure @param {number | null | undefined} value
   */
  advance(measure, value) {
    if (value == null || !Number.isFinite(value)) return;
    if (value > (this.best.get(measure) ?? -1)) {
      this.best.set(measure, value);
      this.deadline = Date.now() + this.timeoutMs;
    }
  }

  expired() {
    return Date.now() >= this.deadline;
  }
}

/**
 * Bytes the replica's clone (pg_basebackup, application name `pgc-clone-<slot>`) has streamed so
 * far on the primary, or null when none runs (or before PostgreSQL 13: no progress view).
 * @param {import("pg").Client} primary @param {import("./pgnode.mjs").NodeAddress} replica
 */
async function cloneProgress(primary, replica) {
  try {
    const { rows } = await primary.query(
      `SELECT max(p.backup_streamed)::float8 AS streamed
         FROM pg_stat_progress_basebackup p JOIN pg_stat_activity a USING (pid)
        WHERE a.application_name = $1`,
      [`pgc-clone-${replica.slot}`],
    );
    return rows[0]?.streamed ?? null;
  } catch {
    return null;
  }
}

/**
 * Waits until the replica accepts connections and has replayed past `lsn`. Gives up after
 * `timeoutMs` without progress: no advance of its clone on the primary, nor of its replay.
 * @param {import("pg").Client} primary
 * @param {import("./pgnode.mjs").NodeAddress} replica
 * @param {string} lsn
 * @param {string} runId
 * @param {number} timeoutMs
 */
async function waitForReplay(primary, replica, lsn, runId, timeoutMs) {
  const patience = new Patience(timeoutMs);
  const idle = () => `${Math.round(timeoutMs / 1000)} s without progress`;
  let probed = 0;
  /** @type {{ replayed: string | null }} */
  let last = { replayed: null };
  // A standby may restart while we wait (its entrypoint re-clones it after a lost slot): a
  // dropped connection is not a failure; connect again within the same patience.
  for (;;) {
    let client;
    try {
      client = await connect(
        replica,
        async () => {
          if (Date.now() - probed >= 250) {
            probed = Date.now();
            patience.advance("clone", await cloneProgress(primary, replica));
          }
          return patience.deadline;
        },
        // A standby that does not answer a trivial query for this long is broken, not slow.
        { query_timeout: 30_000 },
      );
    } catch (err) {
      const why = err instanceof Error ? err.message : String(err);
      // Only blame the clock when it ran out (wrong credentials fail at once).
      throw new Error(`replica ${replica.name}: ${patience.expired() ? `${idle()}; ` : ""}${why}`);
    }
    try {
      for (;;) {
        const { rows } = await client.query(
          `SELECT pg_is_in_recovery() AS in_recovery, pg_last_wal_replay_lsn()::text AS replayed,
                  pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '0/0')::float8 AS replayed_bytes,
                  COALESCE(pg_last_wal_replay_lsn() >= $1::pg_lsn, false) AS caught_up`,
          [lsn],
        );
        last = { replayed: rows[0].replayed };
        if (!rows[0].in_recovery) {
          throw new Fatal(`replica ${replica.name} is not in recovery: it is not a standby`);
        }
        if (rows[0].caught_up) {
          const marker = await client.query("SELECT run_id FROM pgcluster.marker WHERE id = 1");
          if (marker.rows[0]?.run_id !== runId) {
            throw new Fatal(
              `replica ${replica.name} replayed past ${lsn} but does not show marker ${runId}`,
            );
          }
          const state = await client.query(
            "SELECT pg_read_file('pg-cluster-node.json', 0, 65536, true) AS f, (SELECT count(*) FROM wizards)::int AS wizards",
          );
          return {
            node: state.rows[0].f ? JSON.parse(state.rows[0].f) : null,
            wizards: state.rows[0].wizards,
          };
        }
        patience.advance("replay", rows[0].replayed_bytes);
        if (patience.expired()) {
          throw new Fatal(
            `replica ${replica.name} did not replay past the primary's LSN ${lsn} (${idle()}; last replayed: ${last.replayed ?? "nothing"})`,
          );
        }
        await sleep(50);
      }
    } catch (err) {
      if (err instanceof Fatal || patience.expired()) throw err;
      log(`replica ${replica.name}: connection lost (${String(err)}); connecting again`);
    } finally {
      await client.end().catch(() => {});
    }
  }
}

/** When the previous post-step wrote its marker (the end of the last up that verified), or null. */
async function previousMarker(/** @type {import("pg").Client} */ primary) {
  try {
    const { rows } = await primary.query(
      "SELECT extract(epoch FROM written_at)::float8 * 1000 AS t FROM pgcluster.marker WHERE id = 1",
    );
    return rows[0]?.t ? new Date(rows[0].t) : null;
  } catch (err) {
    // No marker table yet: a new cluster.
    if (/does not exist/.test(String(err))) return null;
    throw err;
  }
}

/**
 * What this up did to a node (see {@link changeSince}), from its server's clocks and, when nodes
 * are containers, its container's creation time.
 * @param {import("./pgnode.mjs").NodeAddress} node @param {Date | null} since
 */
async function lastUp(node, since) {
  if (!since) return "created";
  const client = await connect(node, Date.now() + 5000);
  let t;
  try {
    [t] = (
      await client.query(
        `SELECT extract(epoch FROM (pg_stat_file('PG_VERSION')).modification)::float8 * 1000 AS data,
                extract(epoch FROM pg_postmaster_start_time())::float8 * 1000 AS started,
                extract(epoch FROM pg_conf_load_time())::float8 * 1000 AS loaded`,
      )
    ).rows;
  } finally {
    await client.end();
  }
  let container;
  if (process.env.PGC_NODE_CONTAINERS === "1") {
    const r = spawnSync("docker", ["inspect", "-f", "{{.Created}}", node.name], {
      env: dockerEnv(node.dockerHost),
      encoding: "utf8",
    });
    if (r.status === 0) container = new Date(r.stdout.trim());
  }
  return changeSince(
    { data: new Date(t.data), started: new Date(t.started), loaded: new Date(t.loaded), container },
    since,
  );
}

/** A verdict on a replica, as opposed to a lost connection, which is retried. */
class Fatal extends Error {}

/** @param {import("pg").Client} primary */
async function replicationStatus(primary) {
  const { rows } = await primary.query(
    `SELECT s.slot_name, s.active, s.wal_status,
            pg_wal_lsn_diff(pg_current_wal_lsn(), s.restart_lsn)::bigint AS retained_bytes,
            r.application_name, r.state, r.sync_state,
            pg_wal_lsn_diff(pg_current_wal_lsn(), r.replay_lsn)::bigint AS replay_lag_bytes,
            (EXTRACT(epoch FROM COALESCE(r.replay_lag, interval '0')) * 1000)::float8 AS replay_lag_ms
       FROM pg_replication_slots s
       FULL JOIN pg_stat_replication r ON r.pid = s.active_pid
      WHERE s.slot_type = 'physical' OR s.slot_type IS NULL`,
  );
  return rows;
}

/**
 * The primary's WAL archiving (pg_stat_archiver, and the segments waiting in pg_wal): `failing`
 * when its last attempt failed (a failure after the last success), `pendingSegments` how many
 * segments wait to be archived (pg_wal grows by 16 MiB each, up to pgBackRest's queue bound).
 * @param {import("pg").Client} primary
 */
async function archiverStatus(primary) {
  const [a] = (
    await primary.query(
      `SELECT archived_count, last_archived_wal, last_archived_time, failed_count,
              last_failed_wal, last_failed_time,
              (SELECT count(*) FROM pg_ls_dir('pg_wal/archive_status') f
                WHERE f LIKE '%.ready')::int AS pending
         FROM pg_stat_archiver`,
    )
  ).rows;
  const iso = (/** @type {Date | null} */ t) => (t ? t.toISOString() : null);
  const failing =
    a.last_failed_time !== null &&
    (a.last_archived_time === null || a.last_failed_time > a.last_archived_time);
  return withoutUnknowns({
    failing,
    archivedCount: Number(a.archived_count),
    lastArchivedWal: a.last_archived_wal,
    lastArchivedTime: iso(a.last_archived_time),
    failedCount: Number(a.failed_count),
    lastFailedWal: a.last_failed_wal,
    lastFailedTime: iso(a.last_failed_time),
    pendingSegments: a.pending,
  });
}

/**
 * Which node a router endpoint hands a new session to, once it is one of the role wanted (the
 * router's checks settle within about a second of a role change).
 * @param {{ host: string, port: number }} endpoint @param {string} what
 * @param {(node: string, standby: boolean) => boolean} wanted @param {number} deadline
 * @returns {Promise<string>}
 */
async function routedTo(endpoint, what, wanted, deadline) {
  let last = "no session";
  for (;;) {
    try {
      const client = await connect({ name: `${what} endpoint`, ...endpoint }, Date.now() + 3000);
      try {
        const [r] = (
          await client.query(
            "SELECT current_setting('cluster_name') AS node, pg_is_in_recovery() AS standby",
          )
        ).rows;
        if (wanted(r.node, r.standby)) return r.node;
        last = `${r.node} (${r.standby ? "a standby" : "the primary"})`;
      } finally {
        await client.end();
      }
    } catch (err) {
      last = err instanceof Error ? err.message : String(err);
    }
    if (Date.now() >= deadline) {
      throw new Error(
        `the router's ${what} endpoint ${endpoint.host}:${endpoint.port} did not reach the right node (last: ${last}); check: docker logs of the router container`,
      );
    }
    await sleep(100);
  }
}

/**
 * The report leaves out what it could not learn (null or undefined) rather than printing null:
 * its fields are optional in the component's types.
 * @template {Record<string, unknown>} T @param {T} line @returns {any}
 */
function withoutUnknowns(line) {
  return Object.fromEntries(Object.entries(line).filter(([, v]) => v !== null && v !== undefined));
}

async function main() {
  const started = Date.now();
  /** @type {import("./pgnode.mjs").NodeAddress[]} */
  const nodes = jsonEnv("PGC_NODES");
  const desired = requireEnv("PGC_DESIRED_PRIMARY");
  const primaryNode = nodes.find((n) => n.name === desired);
  if (!primaryNode) throw new Error(`PGC_DESIRED_PRIMARY ${desired} is not one of PGC_NODES`);
  const replicas = nodes.filter((n) => n !== primaryNode);
  const timeoutSeconds = Number(process.env.PGC_TIMEOUT_SECONDS ?? "120");
  const deadline = started + timeoutSeconds * 1000;
  requireEnv("PGC_DATABASE");

  const primary = await connect(primaryNode, deadline);
  try {
    const [role] = (await primary.query("SELECT pg_is_in_recovery() AS standby")).rows;
    if (role.standby) {
      throw new Error(`${primaryNode.name} should be the primary but is in recovery (a standby)`);
    }
    const inserted = await seed(primary);
    log(`Wizards seeded (${inserted} row(s) inserted)`);
    const since = await previousMarker(primary);
    log(`previous verified up: ${since ? since.toISOString() : "none"}`);
    const runId = randomUUID();
    const lsn = await writeMarker(primary, runId);
    log(`marker ${runId} written at LSN ${lsn}; waiting for ${replicas.length} replica(s)`);

    const results = await Promise.allSettled(
      replicas.map((r) => waitForReplay(primary, r, lsn, runId, timeoutSeconds * 1000)),
    );
    const routes = process.env.PGC_ROUTER_ENDPOINTS ? jsonEnv("PGC_ROUTER_ENDPOINTS") : undefined;
    const routeDeadline = Date.now() + 15_000;
    const endpoints = routes && {
      readWrite: await routedTo(
        routes.readWrite,
        "read-write",
        (node, standby) => node === primaryNode.name && !standby,
        routeDeadline,
      ),
      // No standby: the read-only endpoint falls back to the primary.
      readOnly: await routedTo(
        routes.readOnly,
        "read-only",
        (_, standby) => standby === replicas.length > 0,
        routeDeadline,
      ),
    };
    const status = await replicationStatus(primary);
    const archiver = process.env.PGC_BACKUP === "on" ? await archiverStatus(primary) : undefined;
    const changes = await Promise.all(
      nodes.map((n) => lastUp(n, since).catch((err) => `unknown (${err.message})`)),
    );
    const changeOf = (/** @type {import("./pgnode.mjs").NodeAddress} */ n) =>
      changes[nodes.indexOf(n)];
    const primaryRows = (await primary.query("SELECT count(*)::int AS n FROM wizards")).rows[0].n;
    /** @type {import("../components/replicationCheck").ReplicationReport} */
    const report = {
      primary: { name: primaryNode.name, lsn, wizards: primaryRows, lastUp: changeOf(primaryNode) },
      replicas: replicas.map((r, i) => {
        const stat =
          status.find((s) => s.slot_name === r.slot) ??
          status.find((s) => s.application_name === r.name);
        const result = results[i];
        const caughtUp = result.status === "fulfilled" ? result.value : null;
        return withoutUnknowns({
          name: r.name,
          caughtUp: caughtUp !== null,
          state: stat?.state ?? "disconnected",
          syncState: stat?.sync_state,
          slot: r.slot ?? "",
          slotActive: stat?.active ?? false,
          slotWalStatus: stat?.wal_status ?? "missing",
          replayLagBytes: stat?.replay_lag_bytes == null ? null : Number(stat.replay_lag_bytes),
          replayLagMs: stat?.replay_lag_ms,
          wizards: caughtUp?.wizards,
          clones: caughtUp?.node?.clones,
          lastCloneReason: caughtUp?.node?.lastCloneReason,
          lastUp: changeOf(r),
        });
      }),
      ...(endpoints ? { endpoints } : {}),
      ...(archiver ? { archiver } : {}),
      seededRows: inserted,
      elapsedMs: Date.now() - started,
    };
    const failures = results.flatMap((r) =>
      r.status === "rejected" ? [String(r.reason?.message ?? r.reason)] : [],
    );
    if (failures.length > 0) {
      process.stderr.write(`${JSON.stringify(report)}\n`);
      throw new Error(failures.join("; "));
    }
    process.stdout.write(`${JSON.stringify(report)}\n`);
  } finally {
    await primary.end();
  }
}

main().catch((err) => {
  log(`ERROR: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
});
