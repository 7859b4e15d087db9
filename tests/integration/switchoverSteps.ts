/**
 * The PostgreSQL mechanics of a planned switchover (docs/design/primary-as-role.md), as small
 * functions the integration test drives step by step against real servers on loopback. They are
 * the reference for the switchover step's SQL; the step itself will live in assets/.
 */
import { SpawnSyncReturns, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import pg from "pg";
import { SUPERUSER_PASSWORD, postgresBinDir } from "./localCluster";

/** A server the test talks to as the superuser over TCP on loopback. */
export interface Server {
  readonly name: string;
  readonly port: number;
}

/** A superuser client of `server` (not yet connected). */
export function clientOf(server: Server, connectTimeoutMs = 2000, database = "mydb"): pg.Client {
  return new pg.Client({
    host: "127.0.0.1",
    port: server.port,
    user: "postgres",
    password: SUPERUSER_PASSWORD,
    database,
    connectionTimeoutMillis: connectTimeoutMs,
    application_name: "switchover-test",
  });
}

/** Runs one query on `server` (in `database`) in a fresh session and returns its rows. */
export async function sql<T extends pg.QueryResultRow = pg.QueryResultRow>(
  server: Server,
  text: string,
  params: unknown[] = [],
  database = "mydb",
): Promise<T[]> {
  const c = clientOf(server, 2000, database);
  await c.connect();
  try {
    return (await c.query<T>(text, params)).rows;
  } finally {
    await c.end();
  }
}

/**
 * Runs a PostgreSQL tool as the postgres OS user, as `docker exec -u postgres` would in a node:
 * the server tools refuse root, and the data directories belong to postgres.
 */
export function asPostgres(tool: string, args: string[], env: Record<string, string> = {}) {
  return spawnSync(
    "setpriv",
    ["--reuid=postgres", "--regid=postgres", "--init-groups", "--", tool, ...args],
    {
      env: { PATH: `${postgresBinDir()}:${process.env.PATH}`, LC_ALL: "C", ...env },
      encoding: "utf8",
      timeout: 120_000,
    },
  );
}

/** stdout and stderr of a finished tool, for assertion messages. */
export function output(r: SpawnSyncReturns<string>): string {
  return `exit ${r.status}\n${r.stdout}${r.stderr}`;
}

/** The fields of `pg_controldata` the switchover reads, from a stopped or running data dir. */
export interface ControlData {
  systemIdentifier: string;
  state: string;
  checkpointLsn: string;
  checkpointTimeline: number;
}

export function controlData(pgdata: string): ControlData {
  const r = asPostgres("pg_controldata", [pgdata]);
  if (r.status !== 0) throw new Error(`pg_controldata ${pgdata}: ${output(r)}`);
  const field = (label: string): string => {
    const m = r.stdout.match(new RegExp(`^${label}:\\s*(.*)$`, "m"));
    if (!m) throw new Error(`pg_controldata ${pgdata} shows no "${label}"`);
    return m[1].trim();
  };
  return {
    systemIdentifier: field("Database system identifier"),
    state: field("Database cluster state"),
    checkpointLsn: field("Latest checkpoint location"),
    checkpointTimeline: Number(field("Latest checkpoint's TimeLineID")),
  };
}

/**
 * The timeline a primary writes on: the first 8 hex digits of its current WAL file's name
 * (`pg_walfile_name` is refused during recovery, so this is for primaries only).
 */
export async function writeTimeline(server: Server): Promise<number> {
  const [row] = await sql<{ f: string }>(
    server,
    "SELECT pg_walfile_name(pg_current_wal_lsn()) AS f",
  );
  return parseInt(row.f.slice(0, 8), 16);
}

/** A standby's WAL receiver (`pg_stat_wal_receiver`), or null when none runs. */
export interface WalReceiver {
  status: string;
  receivedTli: number;
  senderPort: number | null;
  slotName: string | null;
}

export async function walReceiver(server: Server): Promise<WalReceiver | null> {
  const rows = await sql<{
    status: string;
    received_tli: number;
    sender_port: number | null;
    slot_name: string | null;
  }>(server, "SELECT status, received_tli, sender_port, slot_name FROM pg_stat_wal_receiver");
  if (rows.length === 0) return null;
  const r = rows[0];
  return {
    status: r.status,
    receivedTli: r.received_tli,
    senderPort: r.sender_port,
    slotName: r.slot_name,
  };
}

/**
 * Why `candidate` may not become the primary now, or nothing: the switchover step's
 * preconditions. It must be a standby streaming from `primary` on the primary's timeline, with
 * replay running (a paused replay would never reach the old primary's shutdown checkpoint), and
 * at most `maxLagBytes` of WAL behind the primary's current position.
 */
export async function candidateProblems(
  primary: Server,
  candidate: Server,
  maxLagBytes: number,
): Promise<string[]> {
  const problems: string[] = [];
  const [p] = await sql<{ in_recovery: boolean }>(
    primary,
    "SELECT pg_is_in_recovery() AS in_recovery",
  );
  if (p.in_recovery) return [`${primary.name} is not a primary (it is in recovery)`];
  const primaryTli = await writeTimeline(primary);
  const [c] = await sql<{ in_recovery: boolean; pause: string; replay: string | null }>(
    candidate,
    `SELECT pg_is_in_recovery() AS in_recovery, pg_get_wal_replay_pause_state() AS pause,
            pg_last_wal_replay_lsn()::text AS replay`,
  );
  if (!c.in_recovery) return [`${candidate.name} is not a standby`];
  const receiver = await walReceiver(candidate);
  if (
    receiver === null ||
    receiver.status !== "streaming" ||
    receiver.senderPort !== primary.port
  ) {
    problems.push(
      `${candidate.name} is not streaming from ${primary.name} (WAL receiver: ${JSON.stringify(receiver)})`,
    );
  } else if (receiver.receivedTli !== primaryTli) {
    problems.push(
      `${candidate.name} is on timeline ${receiver.receivedTli}, ${primary.name} on ${primaryTli}`,
    );
  }
  if (c.pause !== "not paused") problems.push(`${candidate.name}: WAL replay is ${c.pause}`);
  const [lag] = await sql<{ bytes: string | null }>(
    primary,
    "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::pg_lsn)::bigint::text AS bytes",
    [c.replay],
  );
  const lagBytes = lag.bytes === null ? Infinity : Number(lag.bytes);
  if (lagBytes > maxLagBytes) {
    problems.push(`${candidate.name} is ${lagBytes} bytes behind (limit ${maxLagBytes})`);
  }
  return problems;
}

/** Polls `probe` every 20 ms until it returns a value other than undefined, or throws. */
export async function waitFor<T>(
  what: string,
  timeoutMs: number,
  probe: () => Promise<T | undefined>,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last = "";
  for (;;) {
    try {
      const v = await probe();
      if (v !== undefined) return v;
    } catch (err) {
      last = ` (last error: ${(err as Error).message})`;
    }
    if (Date.now() > deadline)
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * A libpq password file for the replication role that matches any host and port, so a standby can
 * be re-pointed at any node with `ALTER SYSTEM SET primary_conninfo` alone (the entrypoints' file
 * names only the primary's host and port). Written where only postgres can read it.
 */
export function writeAnyHostPassfile(
  file: string,
  user: string,
  password: string,
  databases: string[],
): void {
  const esc = (v: string) => v.replace(/\\/g, "\\\\").replace(/:/g, "\\:");
  const lines = databases.map((db) => `*:*:${db}:${esc(user)}:${esc(password)}\n`).join("");
  fs.writeFileSync(file, lines, { mode: 0o600 });
  const pgUser = spawnSync("id", ["-u", "postgres"], { encoding: "utf8" });
  const pgGroup = spawnSync("id", ["-g", "postgres"], { encoding: "utf8" });
  fs.chownSync(file, Number(pgUser.stdout.trim()), Number(pgGroup.stdout.trim()));
}

/** `primary_conninfo` for a standby named `applicationName` following `upstream`. */
export function conninfo(upstream: Server, applicationName: string, passfile: string): string {
  return [
    "host=127.0.0.1",
    `port=${upstream.port}`,
    "user=replicator",
    `passfile=${passfile}`,
    `application_name=${applicationName}`,
    "connect_timeout=5",
  ].join(" ");
}

/**
 * Points a running standby at `upstream` through its slot there: ALTER SYSTEM (written to the
 * data directory's postgresql.auto.conf, which outlives restarts) and a reload. Since PostgreSQL
 * 13 the WAL receiver restarts with the new settings; the server does not.
 */
export async function repoint(
  standby: Server,
  upstream: Server,
  slot: string,
  passfile: string,
): Promise<void> {
  const c = clientOf(standby);
  await c.connect();
  try {
    const info = conninfo(upstream, standby.name, passfile);
    await c.query(`ALTER SYSTEM SET primary_conninfo = ${c.escapeLiteral(info)}`);
    await c.query(`ALTER SYSTEM SET primary_slot_name = ${c.escapeLiteral(slot)}`);
    await c.query("SELECT pg_reload_conf()");
  } finally {
    await c.end();
  }
}

/** A data directory's server log written by `pg_ctl -l` (kept inside the postgres-owned volume). */
export function rejoinLog(volume: string): string {
  return path.join(volume, "rejoin.log");
}
