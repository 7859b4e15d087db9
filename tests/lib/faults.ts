/** Helpers of the fault layer: Docker actions, a counting writer, table checksums. */
import { spawnSync } from "node:child_process";
import pg from "pg";
import { connectTo, queryAt, waitUntil } from "./stack";

/** Runs the docker CLI; throws with its stderr on failure. */
export function dockerCli(...args: string[]): string {
  const r = spawnSync("docker", args, { encoding: "utf8", timeout: 120_000 });
  if (r.status !== 0) throw new Error(`docker ${args.join(" ")}: ${r.stderr}`);
  return r.stdout.trim();
}

/** Starts a container if Docker has not restarted it by itself. */
export function ensureStarted(name: string): void {
  if (dockerCli("inspect", "-f", "{{.State.Running}}", name) !== "true") dockerCli("start", name);
}

/**
 * Writes rows with known ids, one commit each, to the primary until stopped; survives the primary
 * going away (reconnects) and records which commits the server acknowledged.
 */
export class CountingWriter {
  readonly acked: number[] = [];
  private stopped = false;
  private running?: Promise<void>;
  private next = 0;

  constructor(
    private readonly endpoint: string,
    private readonly table = "fault_load",
    private readonly idBase = 0,
  ) {}

  async prepare(): Promise<void> {
    await queryAt(
      this.endpoint,
      `CREATE TABLE IF NOT EXISTS ${this.table} (id bigint PRIMARY KEY, v text NOT NULL)`,
    );
  }

  start(): void {
    this.running = this.loop();
  }

  async stop(): Promise<number[]> {
    this.stopped = true;
    await this.running;
    return this.acked;
  }

  private async loop(): Promise<void> {
    let client: pg.Client | undefined;
    while (!this.stopped) {
      try {
        if (!client) {
          client = await connectTo(this.endpoint);
          // A server that goes away also emits an error on the idle client; the loop handles it.
          client.on("error", () => {});
        }
        const id = this.idBase + ++this.next;
        await client.query(`INSERT INTO ${this.table} (id, v) VALUES ($1, md5($2))`, [
          id,
          String(id),
        ]);
        this.acked.push(id);
      } catch {
        // The primary is restarting: the commit in flight was not acknowledged; reconnect.
        await client?.end().catch(() => {});
        client = undefined;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    await client?.end().catch(() => {});
  }
}

/** Row count and an order-independent checksum of a table on one node. */
export async function tableDigest(
  endpoint: string,
  table: string,
  column = "v",
): Promise<{ rows: number; md5: string }> {
  const [r] = await queryAt<{ rows: string; md5: string }>(
    endpoint,
    `SELECT count(*) AS rows, md5(COALESCE(string_agg(id::text || ':' || ${column}, ',' ORDER BY id), '')) AS md5 FROM ${table}`,
  );
  return { rows: Number(r.rows), md5: r.md5 };
}

/** Which of `ids` are missing from `table` on a node. */
export async function missingIds(
  endpoint: string,
  table: string,
  ids: number[],
): Promise<number[]> {
  if (ids.length === 0) return [];
  const rows = await queryAt<{ id: string }>(
    endpoint,
    `SELECT id FROM ${table} WHERE id = ANY($1::bigint[])`,
    [ids],
  );
  const present = new Set(rows.map((r) => Number(r.id)));
  return ids.filter((id) => !present.has(id));
}

/** Waits until every replica has replayed everything the primary has written so far. */
export async function waitCaughtUp(
  primary: string,
  replicas: string[],
  timeoutMs = 120_000,
): Promise<number> {
  const [{ lsn }] = await queryAt<{ lsn: string }>(
    primary,
    "SELECT pg_current_wal_lsn()::text AS lsn",
  );
  let total = 0;
  for (const r of replicas) {
    total = Math.max(
      total,
      await waitUntil(
        `${r} replayed ${lsn}`,
        async () =>
          (
            await queryAt<{ ok: boolean }>(
              r,
              "SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn AS ok",
              [lsn],
            )
          )[0].ok,
        timeoutMs,
      ),
    );
  }
  return total;
}

/** Application names the primary is streaming to. */
export async function streaming(primary: string): Promise<string[]> {
  const rows = await queryAt<{ application_name: string }>(
    primary,
    "SELECT application_name FROM pg_stat_replication WHERE state = 'streaming' ORDER BY 1",
  );
  return rows.map((r) => r.application_name);
}

/** Whether the server at a host port accepts connections (pg_isready's question). */
export async function accepting(endpoint: string): Promise<boolean> {
  try {
    await queryAt(endpoint, "SELECT 1");
    return true;
  } catch {
    return false;
  }
}

/** Writes about `mb` megabytes of WAL on the primary in large inserts. */
export async function writeWal(endpoint: string, table: string, mb: number): Promise<number> {
  await queryAt(
    endpoint,
    `CREATE TABLE IF NOT EXISTS ${table} (id bigserial PRIMARY KEY, payload text)`,
  );
  // ~1.6 kB of WAL per row (1 kB payload, index and headers).
  const rows = Math.ceil((mb * 1024) / 1.6);
  for (let done = 0; done < rows; done += 50_000) {
    await queryAt(
      endpoint,
      `INSERT INTO ${table} (payload) SELECT repeat(md5(g::text), 32) FROM generate_series(1, $1) g`,
      [Math.min(50_000, rows - done)],
    );
  }
  return (await tableDigest(endpoint, table, "payload")).rows;
}
