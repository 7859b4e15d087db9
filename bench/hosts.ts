/**
 * `npm run bench:hosts` (issue 11): what several Docker hosts and TLS cost, all in one run on the
 * same machine and image. Four cases of 1 + 2, each a real `pulumi up` from nothing: one engine
 * and three engines (scripts/hosts.sh: engines in network namespaces on a bridge), each with TLS
 * off and on. Per case: time to the verified cluster, pgbench TPC-B (8 clients) on the primary's
 * published port, and the replicas' replay lag sampled every 200 ms meanwhile (p50, p99, max).
 * Ratios are against the first case of the same run. Writes bench/results/hosts.json, hosts.md
 * and hosts.svg. Not a pass/fail test.
 *
 * Env: BENCH_LOAD_SECONDS (pgbench duration, default 30), BENCH_IMAGE, BENCH_ROUTER_IMAGE;
 * BENCH_SMOKE=1 runs 10 s loads.
 */
import { execFileSync, spawn, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import pg from "pg";
import { hostsScript, testHosts } from "../tests/lib/hosts";
import { PulumiStack, requirePulumiPlugins } from "../tests/lib/pulumiStack";
import {
  IMAGE,
  OUT,
  ROUTER_IMAGE,
  SMOKE,
  clusterConfig,
  logger,
  pgBinDir,
  quantile,
  r1,
  sleep,
} from "./lib";

const LOAD_SECONDS = Number(process.env.BENCH_LOAD_SECONDS ?? (SMOKE ? 10 : 30));
const PASSWORD = "bench-Hosts-pw-1";
const PORT = 26200;
const PG_BIN = pgBinDir();
const HOSTS = testHosts(3);

interface Case {
  name: string;
  hosts: boolean;
  tls: boolean;
}
const CASES: Case[] = [
  { name: "one engine, TLS off", hosts: false, tls: false },
  { name: "one engine, TLS on", hosts: false, tls: true },
  { name: "three engines, TLS off", hosts: true, tls: false },
  { name: "three engines, TLS on", hosts: true, tls: true },
];

interface Stats {
  p50: number;
  p99: number;
  max: number;
  n: number;
}
interface Result {
  case: string;
  upSeconds: number;
  tps: number;
  lagMs: Stats;
  lagBytes: Stats;
}

const log = logger("bench:hosts");
const stats = (xs: number[]): Stats => ({
  p50: quantile(xs, 0.5),
  p99: quantile(xs, 0.99),
  max: quantile(xs, 1),
  n: xs.length,
});

/** The libpq environment for a client of this case (verify-full against the CA file with TLS). */
function clientEnv(caFile?: string): NodeJS.ProcessEnv {
  return {
    ...process.env,
    PGPASSWORD: PASSWORD,
    ...(caFile ? { PGSSLMODE: "verify-full", PGSSLROOTCERT: caFile } : { PGSSLMODE: "disable" }),
  };
}

function pgbench(host: string, port: number, env: NodeJS.ProcessEnv): Promise<string> {
  const target = ["-h", host, "-p", String(port), "-U", "postgres", "mydb"];
  execFileSync(`${PG_BIN}/pgbench`, ["-i", "-s", "10", "-q", ...target], { env, stdio: "ignore" });
  return new Promise((resolve, reject) => {
    const p = spawn(
      `${PG_BIN}/pgbench`,
      ["-c", "8", "-j", "2", "-T", String(LOAD_SECONDS), ...target],
      { env },
    );
    let out = "";
    p.stdout.on("data", (c) => (out += c));
    p.on("close", (code) =>
      code === 0 ? resolve(out) : reject(new Error(`pgbench exited ${code}`)),
    );
  });
}

/** Every replica's replay lag on the primary, every 200 ms while `work` runs. */
async function sampleLag(
  host: string,
  port: number,
  ca: string | undefined,
  work: Promise<unknown>,
): Promise<{ ms: number[]; bytes: number[] }> {
  const c = new pg.Client({
    host,
    port,
    user: "postgres",
    password: PASSWORD,
    database: "mydb",
    ...(ca ? { ssl: { ca } } : {}),
  });
  await c.connect();
  const ms: number[] = [];
  const bytes: number[] = [];
  let done = false;
  work.finally(() => (done = true)).catch(() => {});
  try {
    while (!done) {
      const { rows } = await c.query<{ b: string; m: string }>(
        `SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn) AS b,
                COALESCE(EXTRACT(epoch FROM replay_lag) * 1000, 0) AS m
           FROM pg_stat_replication WHERE application_name NOT LIKE '%-control'`,
      );
      for (const r of rows) {
        bytes.push(Number(r.b));
        ms.push(Number(r.m));
      }
      await sleep(200);
    }
  } finally {
    await c.end();
  }
  await work;
  return { ms, bytes };
}

async function runCase(c: Case, i: number): Promise<Result> {
  const stack = new PulumiStack(`benchh${process.pid % 1000}${i}`);
  try {
    const config = clusterConfig(PORT, 2, PASSWORD, {
      tls: String(c.tls),
      ...(c.hosts ? { hosts: JSON.stringify(HOSTS) } : {}),
    });
    const up = await stack.up(config);
    const upSeconds = (up.verifiedMs ?? up.engineMs) / 1000;
    const host = c.hosts ? HOSTS[0].address : "127.0.0.1";
    const ca = c.tls ? (up.outputs.caCertificate as string) : undefined;
    const caFile = ca ? path.join(os.tmpdir(), `bench-hosts-ca-${i}.crt`) : undefined;
    if (caFile && ca) fs.writeFileSync(caFile, ca);
    const work = pgbench(host, PORT, clientEnv(caFile));
    const lag = await sampleLag(host, PORT, ca, work);
    const tps = Number(/tps = ([0-9.]+)/.exec(await work)?.[1]);
    const result = {
      case: c.name,
      upSeconds,
      tps,
      lagMs: stats(lag.ms),
      lagBytes: stats(lag.bytes),
    };
    log(`${c.name}: up ${r1(upSeconds)} s, ${r1(tps)} tps, lag p99 ${r1(result.lagMs.p99)} ms`);
    return result;
  } finally {
    await stack.remove();
  }
}

function report(results: Result[], meta: Record<string, unknown>): string {
  const base = results[0];
  const lines = [
    `# Several hosts and TLS (${meta.date}, ${meta.cpus} CPUs, ${IMAGE})`,
    "",
    `1 + 2 from nothing per case, pgbench TPC-B scale 10, 8 clients, ${LOAD_SECONDS} s on the primary's`,
    "published port (TLS cases: verify-full); replay lag sampled every 200 ms. Ratios: against the",
    "first case, same run.",
    "",
    "| case | up to verified | tps | tps ratio | lag p50 | lag p99 | lag max | p99 bytes |",
    "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ...results.map(
      (r) =>
        `| ${r.case} | ${r1(r.upSeconds)} s | ${r1(r.tps)} | ${(r.tps / base.tps).toFixed(2)} | ${r1(r.lagMs.p50)} ms | ${r1(r.lagMs.p99)} ms | ${r1(r.lagMs.max)} ms | ${Math.round(r.lagBytes.p99)} |`,
    ),
    "",
  ];
  return lines.join("\n");
}

/** Bars: tps (left) and replay lag p99 (right) per case. */
function chart(results: Result[]): string {
  const w = 720;
  const rowH = 28;
  const h = 60 + results.length * rowH;
  const maxTps = Math.max(...results.map((r) => r.tps), 1);
  const maxLag = Math.max(...results.map((r) => r.lagMs.p99), 1);
  const bars = results.map((r, i) => {
    const y = 40 + i * rowH;
    const tpsW = (r.tps / maxTps) * 200;
    const lagW = (r.lagMs.p99 / maxLag) * 200;
    return [
      `<text x="10" y="${y + 14}" font-size="12">${r.case}</text>`,
      `<rect x="190" y="${y}" width="${tpsW}" height="18" fill="#4a7bd0"/>`,
      `<text x="${195 + tpsW}" y="${y + 14}" font-size="11">${r1(r.tps)}</text>`,
      `<rect x="470" y="${y}" width="${lagW}" height="18" fill="#d07a4a"/>`,
      `<text x="${475 + lagW}" y="${y + 14}" font-size="11">${r1(r.lagMs.p99)} ms</text>`,
    ].join("");
  });
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${w}" height="${h}" font-family="sans-serif">`,
    `<text x="190" y="24" font-size="13">pgbench tps</text>`,
    `<text x="470" y="24" font-size="13">replay lag p99</text>`,
    ...bars,
    "</svg>",
    "",
  ].join("\n");
}

async function main(): Promise<void> {
  requirePulumiPlugins();
  fs.mkdirSync(OUT, { recursive: true });
  const meta = {
    date: new Date().toISOString(),
    cpus: os.cpus().length,
    loadSeconds: LOAD_SECONDS,
  };
  const results: Result[] = [];
  let hostsUp = false;
  try {
    for (const [i, c] of CASES.entries()) {
      if (c.hosts && !hostsUp) {
        log("starting three Docker engines (scripts/hosts.sh)");
        hostsScript("down");
        hostsScript("up", "3", IMAGE, ROUTER_IMAGE);
        hostsUp = true;
      }
      results.push(await runCase(c, i));
    }
  } finally {
    if (hostsUp) hostsScript("down");
  }
  fs.writeFileSync(
    path.join(OUT, "hosts.json"),
    `${JSON.stringify({ ...meta, results }, null, 2)}\n`,
  );
  fs.writeFileSync(path.join(OUT, "hosts.md"), report(results, meta));
  fs.writeFileSync(path.join(OUT, "hosts.svg"), chart(results));
  process.stdout.write(report(results, meta));
  // The benchmark left nothing behind on the engines it used.
  const left = spawnSync("docker", ["ps", "-aq", "--filter", "name=pg-cluster-benchh"], {
    encoding: "utf8",
  }).stdout.trim();
  if (left) log(`containers left: ${left}`);
}

main().catch((err) => {
  log(`ERROR: ${err instanceof Error ? err.stack : String(err)}`);
  process.exit(1);
});
