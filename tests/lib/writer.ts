/**
 * A client that writes through a switchover: it inserts increasing ids one by one into a table
 * on whichever endpoint is writable (not in recovery), reconnecting in turn to each endpoint when
 * a write fails. It records the ids whose commit was acknowledged and when, so a test can check
 * that every acknowledged id survived and measure the longest pause between two of them.
 */
import pg from "pg";
import { sslFor } from "./clientTls";

export interface WriterOptions {
  /** `host:port` of every node; the writer uses whichever is writable. */
  readonly endpoints: readonly string[];
  readonly password: string;
  readonly user?: string;
  readonly database?: string;
  /** A table with an integer primary key column `id`. */
  readonly table: string;
  /** The first id (ids must not collide with an earlier writer's on the same table). */
  readonly firstId?: number;
}

export class AckWriter {
  readonly acked: number[] = [];
  /** When each acknowledged id was acknowledged (Date.now()). */
  readonly ackTimes: number[] = [];
  private stopped = false;
  private running: Promise<void> = Promise.resolve();

  constructor(private readonly o: WriterOptions) {}

  start(): void {
    this.running = this.loop();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.running;
  }

  /** The longest time between two consecutive acknowledged commits, in ms. */
  longestGapMs(): number {
    let gap = 0;
    for (let i = 1; i < this.ackTimes.length; i++) {
      gap = Math.max(gap, this.ackTimes[i] - this.ackTimes[i - 1]);
    }
    return gap;
  }

  private async loop(): Promise<void> {
    let next = this.o.firstId ?? 1;
    let client: pg.Client | undefined;
    while (!this.stopped) {
      client ??= await this.connectWritable();
      if (!client) {
        await new Promise((r) => setTimeout(r, 10));
        continue;
      }
      const id = next++;
      try {
        await client.query(`INSERT INTO ${this.o.table} (id) VALUES ($1)`, [id]);
        this.acked.push(id);
        this.ackTimes.push(Date.now());
      } catch {
        // The outcome of this id is unknown (it may have committed): it is not counted as acked.
        await client.end().catch(() => {});
        client = undefined;
      }
    }
    await client?.end().catch(() => {});
  }

  private async connectWritable(): Promise<pg.Client | undefined> {
    for (const ep of this.o.endpoints) {
      const i = ep.lastIndexOf(":");
      const c = new pg.Client({
        host: ep.slice(0, i),
        port: Number(ep.slice(i + 1)),
        user: this.o.user ?? "postgres",
        password: this.o.password,
        database: this.o.database ?? "mydb",
        connectionTimeoutMillis: 500,
        ssl: sslFor(ep),
      });
      // A server that stops under a client emits 'error' on it: the next write notices instead.
      c.on("error", () => {});
      try {
        await c.connect();
        const { rows } = await c.query<{ ro: boolean }>("SELECT pg_is_in_recovery() AS ro");
        if (!rows[0].ro) return c;
      } catch {
        // down, starting, or read-only: the next endpoint
      }
      await c.end().catch(() => {});
    }
    return undefined;
  }
}
