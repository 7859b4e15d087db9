/**
 * What the benchmarks (bench/bench.ts, hosts.ts, backup.ts) share: where results go, the images,
 * the stack config of a cluster, a log line and rounding.
 */
import * as fs from "node:fs";
import * as path from "node:path";

export const ROOT = path.resolve(__dirname, "..");
export const OUT = path.join(ROOT, "bench", "results");
export const SMOKE = process.env.BENCH_SMOKE === "1";
export const IMAGE = process.env.BENCH_IMAGE ?? "pg-cluster-postgres:15";
export const ROUTER_IMAGE = process.env.BENCH_ROUTER_IMAGE ?? "pg-cluster-haproxy:2.6";

/** The newest PostgreSQL client binaries on the machine (pgbench, psql). */
export function pgBinDir(): string {
  return fs
    .readdirSync("/usr/lib/postgresql")
    .map((v) => `/usr/lib/postgresql/${v}/bin`)
    .sort()
    .reverse()[0];
}

/**
 * A cluster's stack config: `replicas` replicas of the bench image, the primary on `port` and the
 * replicas after it (ports below Linux's ephemeral range, 32768-60999: a published port in it can
 * collide with the local end of an outgoing connection), `password` for the superuser and
 * `password` + "r" for replication.
 */
export function clusterConfig(
  port: number,
  replicas: number,
  password: string,
  extra: Record<string, string> = {},
): Record<string, string> {
  return {
    replicas: String(replicas),
    image: IMAGE,
    routerImage: ROUTER_IMAGE,
    primaryPort: String(port),
    replicaBasePort: String(port + 1),
    superuserPassword: password,
    replicationPassword: `${password}r`,
    ...extra,
  };
}

/** A progress line on stderr, tagged with the benchmark's name. */
export const logger = (tag: string) => (m: string) => process.stderr.write(`[${tag}] ${m}\n`);
export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
export const r1 = (x: number) => Math.round(x * 10) / 10;

/** The `p` quantile (0..1) of `xs` (nearest rank below), 0 for none. */
export function quantile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(p * s.length))] ?? 0;
}
