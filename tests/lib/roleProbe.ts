/**
 * A client of one router endpoint that asks, again and again, which node it is on and whether
 * that node is a standby: as node-postgres with one session that reconnects when it breaks, or as
 * psql (libpq) with a new session per probe. Tests read the observations: which roles a client
 * saw, and for how long it saw none.
 */
import { spawn } from "node:child_process";
import pg from "pg";
import { libpqTlsEnv, sslFor } from "./clientTls";

export interface Observation {
  /** Date.now() when the answer (or the error) came. */
  readonly t: number;
  readonly node?: string;
  readonly standby?: boolean;
  readonly error?: string;
}

export interface ProbeOptions {
  /** `host:port` of the endpoint. */
  readonly endpoint: string;
  readonly password: string;
  readonly client: "node-postgres" | "psql";
  readonly user?: string;
  readonly database?: string;
  /** Pause between probes. @default 20 */
  readonly intervalMs?: number;
}

const ROLE = "SELECT current_setting('cluster_name') AS node, pg_is_in_recovery() AS standby";

export class RoleProbe {
  readonly observations: Observation[] = [];
  private stopped = false;
  private running: Promise<void> = Promise.resolve();

  constructor(private readonly o: ProbeOptions) {}

  start(): void {
    this.running = this.o.client === "psql" ? this.psqlLoop() : this.nodeLoop();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.running;
  }

  /** The answers, without the errors. */
  answers(): { t: number; node: string; standby: boolean }[] {
    return this.observations.flatMap((x) =>
      x.node === undefined ? [] : [{ t: x.t, node: x.node, standby: x.standby === true }],
    );
  }

  /** The longest time between two answers, in ms. */
  longestSilenceMs(): number {
    const a = this.answers();
    let gap = 0;
    for (let i = 1; i < a.length; i++) gap = Math.max(gap, a[i].t - a[i - 1].t);
    return gap;
  }

  private pause(): Promise<void> {
    return new Promise((r) => setTimeout(r, this.o.intervalMs ?? 20));
  }

  private async nodeLoop(): Promise<void> {
    const [host, port] = this.o.endpoint.split(":");
    let client: pg.Client | undefined;
    while (!this.stopped) {
      try {
        if (!client) {
          client = new pg.Client({
            host,
            port: Number(port),
            user: this.o.user ?? "postgres",
            password: this.o.password,
            database: this.o.database ?? "mydb",
            connectionTimeoutMillis: 2000,
            ssl: sslFor(this.o.endpoint),
          });
          client.on("error", () => {});
          await client.connect();
        }
        const [r] = (await client.query(ROLE)).rows;
        this.observations.push({ t: Date.now(), node: r.node, standby: r.standby });
      } catch (err) {
        this.observations.push({ t: Date.now(), error: String(err) });
        await client?.end().catch(() => {});
        client = undefined;
      }
      await this.pause();
    }
    await client?.end().catch(() => {});
  }

  private async psqlLoop(): Promise<void> {
    const [host, port] = this.o.endpoint.split(":");
    // The password through the environment, not the command line (process lists show argv).
    const env = {
      ...process.env,
      PGPASSWORD: this.o.password,
      // 5 s: a TLS handshake and SCRAM through the router can take over 2 s on a loaded CI machine
      // (one psql read timed out there at 2 s while a standby drained, 2026-11-27).
      PGCONNECT_TIMEOUT: "5",
      ...libpqTlsEnv(this.o.endpoint),
    };
    const conninfo = `host=${host} port=${port} user=${this.o.user ?? "postgres"} dbname=${this.o.database ?? "mydb"}`;
    while (!this.stopped) {
      const out = await new Promise<{ code: number | null; text: string }>((resolve) => {
        const child = spawn("psql", [conninfo, "-XAtF", " ", "-c", ROLE], { env });
        let text = "";
        child.stdout.on("data", (d) => (text += d));
        child.stderr.on("data", (d) => (text += d));
        child.on("close", (code) => resolve({ code, text: text.trim() }));
      });
      const m = /^(\S+) ([tf])$/.exec(out.text);
      this.observations.push(
        out.code === 0 && m
          ? { t: Date.now(), node: m[1], standby: m[2] === "t" }
          : { t: Date.now(), error: out.text },
      );
      await this.pause();
    }
  }
}
