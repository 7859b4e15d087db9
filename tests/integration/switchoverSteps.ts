/**
 * Small probes the ctl.sh tests (entrypoint.test.ts, localNode2.ts) use on real servers on
 * loopback: SQL as the superuser, a tool run as the postgres user, a primary's write timeline,
 * a standby's WAL receiver. The switchover itself lives in assets/topology.mjs.
 */
import { SpawnSyncReturns, spawnSync } from "node:child_process";
import pg from "pg";
import { SUPERUSER_PASSWORD, postgresBinDir } from "./localCluster";

/** A server the test talks to as the superuser over TCP on loopback. */
export interface Server {
  readonly name: string;
  readonly port: number;
}

/** A superuser client of `server` (not yet connected). */
function clientOf(server: Server, connectTimeoutMs = 2000, database = "mydb"): pg.Client {
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
