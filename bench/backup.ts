/**
 * `npm run bench:backup` (issue 12): what backups and restore cost, in one run on one machine and
 * image, each against a baseline of the same run on the same data (~BENCH_SCALE_GB):
 * - a full backup by the component (a new `backupTrigger`: the backup step of a `pulumi up`)
 *   against `pgbackrest backup --type=full` run by hand in the primary's container, and against
 *   `pg_basebackup` there (no compression, no repository: the copy alone); the step's program
 *   alone from the standby (the default) and on the primary (`backupTarget` primary), with the
 *   CPU time the primary's and the standby's containers spent meanwhile;
 * - a new stack restored from that repository (`restoreRepository`: a `pulumi up` to the verified
 *   cluster, 1 + 0) against a new empty stack of 1 + 0 (what a restore adds to an up) and against
 *   `pgbackrest restore` by hand into a scratch directory (the copy alone, no recovery);
 * - archive lag under pgbench TPC-B (8 clients): WAL segments waiting in pg_wal and the bytes
 *   from the last archived segment's end to the current position, sampled every 500 ms.
 * Writes bench/results/backup.json, backup.md and backup.svg. Not a pass/fail test.
 *
 * Env: BENCH_SCALE_GB (default 1), BENCH_LOAD_SECONDS (pgbench, default 30), BENCH_IMAGE,
 * BENCH_ROUTER_IMAGE; BENCH_SMOKE=1: 0.2 GB and 10 s.
 */
import { execFile, execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { PulumiStack, UpResult, requirePulumiPlugins } from "../tests/lib/pulumiStack";
import { lsnBytes } from "../assets/roles.mjs";
import { IMAGE, OUT, SMOKE, clusterConfig, logger, quantile, r1, sleep } from "./lib";

const SCALE_GB = Number(process.env.BENCH_SCALE_GB ?? (SMOKE ? 0.2 : 1));
const LOAD_SECONDS = Number(process.env.BENCH_LOAD_SECONDS ?? (SMOKE ? 10 : 30));
const PASSWORD = "bench-Backup-pw-1";
const PORT = 26400;
const SOURCE = "benchbk";
const CLUSTER = `pg-cluster-${SOURCE}`;
const PRIMARY = `${CLUSTER}-primary`;
const STANDBY = `${CLUSTER}-replica-1`;
const ASSETS = path.join(__dirname, "..", "assets");
const REPOSITORY = `${CLUSTER}-backup`;

const log = logger("bench:backup");
const config = (port: number, replicas: number, extra: Record<string, string> = {}) =>
  clusterConfig(port, replicas, PASSWORD, extra);

/** A command's stdout, failing loudly. */
function sh(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: "utf8", maxBuffer: 64 * 1024 * 1024 });
}

/** SQL on the source's primary, over its socket as the postgres user (no TLS, no password). */
function sql(text: string): string {
  return sh("docker", [
    "exec",
    "-u",
    "postgres",
    PRIMARY,
    "psql",
    "-d",
    "mydb",
    "-XAtqc",
    text,
  ]).trim();
}

/** Seconds `bash -c script` takes as the postgres user in the source's primary container. */
function timedInPrimary(script: string): number {
  const t0 = performance.now();
  sh("docker", ["exec", "-u", "postgres", PRIMARY, "bash", "-c", script]);
  return (performance.now() - t0) / 1000;
}

/** Seconds a throw-away container of the image takes to run `argv`, with `options` (docker run's). */
function timedRun(options: string[], argv: string[]): number {
  const t0 = performance.now();
  sh("docker", ["run", "--rm", ...options, "--entrypoint", argv[0], IMAGE, ...argv.slice(1)]);
  return (performance.now() - t0) / 1000;
}

/** CPU seconds `container` has used (cgroup v1 cpuacct, or v2 cpu.stat). */
function cpuSeconds(container: string): number {
  const [unit, value] = sh("docker", [
    "exec",
    container,
    "bash",
    "-c",
    "f=/sys/fs/cgroup/cpuacct/cpuacct.usage; if [ -r $f ]; then echo ns $(cat $f); else echo us $(sed -n 's/^usage_usec //p' /sys/fs/cgroup/cpu.stat); fi",
  ])
    .trim()
    .split(" ");
  return Number(value) / (unit === "ns" ? 1e9 : 1e6);
}

/**
 * The backup step's program alone (assets/backup.mjs, as the step runs it, with `target`): its
 * seconds and the CPU seconds the primary's and the standby's containers spent meanwhile.
 */
function backupStepAlone(target: string, ca: string) {
  const nodes = [PRIMARY, STANDBY].map((name, i) => ({
    name,
    host: "localhost",
    port: PORT + i,
    internalHost: name,
    slot: i === 0 ? "primary" : "replica_1",
  }));
  const env = {
    ...process.env,
    PGC_NODES: JSON.stringify(nodes),
    PGC_SUPERUSER: "postgres",
    PGC_SUPERUSER_PASSWORD: PASSWORD,
    PGC_DATABASE: "mydb",
    PGC_TLS_CA: ca,
    PGC_BACKUP_TYPE: "full",
    PGC_BACKUP_TARGET: target,
  };
  const [p0, s0, t0] = [cpuSeconds(PRIMARY), cpuSeconds(STANDBY), performance.now()];
  const out = execFileSync("node", ["backup.mjs"], { cwd: ASSETS, env, encoding: "utf8" });
  const seconds = (performance.now() - t0) / 1000;
  return {
    seconds: r1(seconds),
    primaryCpu: r1(cpuSeconds(PRIMARY) - p0),
    standbyCpu: r1(cpuSeconds(STANDBY) - s0),
    fromStandby: (JSON.parse(out) as { fromStandby: boolean }).fromStandby,
  };
}

/** How long an up's step named `name` ran, in seconds. */
function stepSeconds(r: UpResult, name: string): number {
  const t = r.timings.find((x) => x.name === name && x.type === "command:local:Command");
  if (!t) throw new Error(`no step ${name} in this up`);
  return (t.endMs - t.startMs) / 1000;
}

/** The byte position just past a WAL segment (24 hex digits: timeline, log, segment). */
function segmentEnd(wal: string): bigint {
  const log = BigInt(`0x${wal.slice(8, 16)}`);
  const seg = BigInt(`0x${wal.slice(16, 24)}`);
  return log * 0x100000000n + (seg + 1n) * 16n * 1024n * 1024n;
}

/** Archive lag sampled every 500 ms while pgbench runs in the primary's container. */
async function archiveLag(): Promise<Record<string, number>> {
  sh("docker", ["exec", "-u", "postgres", PRIMARY, "pgbench", "-i", "-q", "-s", "10", "mydb"]);
  const pending: number[] = [];
  const lagMB: number[] = [];
  let done = false;
  const bench = new Promise<string>((resolve, reject) => {
    execFile(
      "docker",
      [
        "exec",
        "-u",
        "postgres",
        PRIMARY,
        "pgbench",
        "-c",
        "8",
        "-j",
        "2",
        "-T",
        String(LOAD_SECONDS),
        "mydb",
      ],
      { encoding: "utf8" },
      (err, out) => (err ? reject(err) : resolve(out)),
    );
  }).finally(() => (done = true));
  while (!done) {
    const [count, last, current] = sql(
      `SELECT (SELECT count(*) FROM pg_ls_dir('pg_wal/archive_status') f WHERE f LIKE '%.ready'),
              (SELECT last_archived_wal FROM pg_stat_archiver), pg_current_wal_lsn()`,
    ).split("|");
    pending.push(Number(count));
    if (last) lagMB.push(Number(lsnBytes(current) - segmentEnd(last)) / 1024 / 1024);
    await sleep(500);
  }
  const tps = Number(/tps = ([0-9.]+)/.exec(await bench)?.[1]);
  const [failed] = sql("SELECT failed_count FROM pg_stat_archiver").split("|");
  return {
    tps: Math.round(tps),
    samples: pending.length,
    pendingSegmentsP50: quantile(pending, 0.5),
    pendingSegmentsMax: Math.max(...pending),
    lagMBP50: r1(quantile(lagMB, 0.5)),
    lagMBMax: r1(Math.max(...lagMB)),
    failedCount: Number(failed),
  };
}

async function main(): Promise<void> {
  requirePulumiPlugins();
  fs.mkdirSync(OUT, { recursive: true });
  const source = new PulumiStack(SOURCE);
  const empty = new PulumiStack("benchbkempty");
  const restored = new PulumiStack("benchbkrestored");
  const results: Record<string, unknown> = {
    date: new Date().toISOString(),
    image: IMAGE,
    scaleGB: SCALE_GB,
  };
  try {
    log("source: 1 + 1 with backups");
    await source.up(config(PORT, 1, { backup: "true" }));
    log(`loading ~${SCALE_GB} GB`);
    const rows = Math.round((SCALE_GB * 1024 * 1024) / 1.2);
    for (let done = 0; done < rows; done += 200_000) {
      sql(
        `CREATE TABLE IF NOT EXISTS bulk (id bigserial, payload text); INSERT INTO bulk (payload) SELECT repeat(md5(g::text), 32) FROM generate_series(1, ${Math.min(200_000, rows - done)}) g`,
      );
    }
    sql("CHECKPOINT");
    const bytes = Number(sql("SELECT sum(pg_database_size(datname)) FROM pg_database"));
    const mb = bytes / 1024 / 1024;

    // The load's aftermath (autovacuum of the new table, its checkpoint) done before measuring.
    sql("VACUUM ANALYZE bulk");
    sql("CHECKPOINT");

    // Backups: ours (the step of an up, from the standby by default), the step's program alone
    // from the standby and on the primary (with what each container spent: the point of backing
    // up from a standby), then pgBackRest and pg_basebackup by hand.
    const up = await source.up(config(PORT, 1, { backup: "true", backupTrigger: "bench" }));
    const ours = stepSeconds(up, `${CLUSTER}-backup`);
    const ca = up.outputs.caCertificate as string;
    const standbyAlone = backupStepAlone("prefer-standby", ca);
    const primaryAlone = backupStepAlone("primary", ca);
    const conf = "/var/lib/postgresql/data/conf/pgbackrest.conf";
    const raw = timedInPrimary(
      `pgbackrest --config=${conf} --stanza=${CLUSTER} --type=full backup`,
    );
    // As a replica clones: the replication role over the cluster network (with TLS, the default).
    const basebackup = timedRun(
      ["--network", `${CLUSTER}-net`, "-e", `PGPASSWORD=${PASSWORD}r`, "-e", "PGSSLMODE=require"],
      [
        "pg_basebackup",
        "-h",
        PRIMARY,
        "-U",
        "replicator",
        "-D",
        "/tmp/bb",
        "-X",
        "stream",
        "-c",
        "fast",
      ],
    );
    results.backup = {
      dataMB: r1(mb),
      oursFromStandby: (up.outputs.backup as { fromStandby?: boolean }).fromStandby === true,
      oursSeconds: r1(ours),
      stepFromStandby: standbyAlone,
      stepOnPrimary: primaryAlone,
      rawPgbackrestSeconds: r1(raw),
      pgBasebackupSeconds: r1(basebackup),
      oursMBps: r1(mb / ours),
      rawMBps: r1(mb / raw),
      basebackupMBps: r1(mb / basebackup),
      oursVsRaw: Math.round((ours / raw) * 100) / 100,
    };
    log(`backup: ${JSON.stringify(results.backup)}`);

    // Restore: a new stack from the repository against an empty one, and pgBackRest alone.
    const e = await empty.up(config(PORT + 10, 0));
    const r = await restored.up(config(PORT + 20, 0, { restoreRepository: REPOSITORY }));
    const rawRestore = timedRun(
      ["--network", "none", "-u", "postgres", "-v", `${REPOSITORY}:/repo:ro`],
      [
        "pgbackrest",
        "--repo1-path=/repo",
        `--stanza=${CLUSTER}`,
        "--pg1-path=/tmp/r",
        "--lock-path=/tmp",
        "--log-level-file=off",
        "--log-level-console=warn",
        "restore",
      ],
    );
    const verified = (x: UpResult) => (x.verifiedMs ?? x.engineMs) / 1000;
    results.restore = {
      dataMB: r1(mb),
      restoredStackSeconds: r1(verified(r)),
      emptyStackSeconds: r1(verified(e)),
      restoreAddsSeconds: r1(verified(r) - verified(e)),
      rawPgbackrestRestoreSeconds: r1(rawRestore),
      topologyStepSeconds: r1(stepSeconds(r, "pg-cluster-benchbkrestored-topology")),
      restoredMBps: r1(mb / (verified(r) - verified(e))),
      rawMBps: r1(mb / rawRestore),
    };
    log(`restore: ${JSON.stringify(results.restore)}`);
    await restored.remove();
    await empty.remove();

    results.archiveLag = await archiveLag();
    log(`archive lag: ${JSON.stringify(results.archiveLag)}`);
  } finally {
    await restored.remove().catch(() => {});
    await empty.remove().catch(() => {});
    await source.remove().catch(() => {});
    for (const v of [REPOSITORY, "pg-cluster-benchbkrestored-backup"]) {
      execFileSync("docker", ["volume", "rm", "-f", v], { stdio: "ignore" });
    }
  }
  fs.writeFileSync(path.join(OUT, "backup.json"), `${JSON.stringify(results, null, 2)}\n`);
  fs.writeFileSync(path.join(OUT, "backup.md"), report(results));
  fs.writeFileSync(path.join(OUT, "backup.svg"), chart(results));
  process.stdout.write(report(results));
}

function report(r: Record<string, unknown>): string {
  const b = r.backup as Record<string, number>;
  const s = r.restore as Record<string, number>;
  const a = r.archiveLag as Record<string, number>;
  const sf = (r.backup as Record<string, Record<string, number | boolean>>).stepFromStandby;
  const op = (r.backup as Record<string, Record<string, number | boolean>>).stepOnPrimary;
  return `# Backups and restore (${r.date}, ${r.image}, ${b.dataMB} MB of data)

| case | seconds | MB/s |
| --- | ---: | ---: |
| full backup: ours, from the standby${b.oursFromStandby ? "" : " (NOT: it ran on the primary)"} (the backup step of a pulumi up) | ${b.oursSeconds} | ${b.oursMBps} |
| full backup: pgbackrest backup by hand, on the primary | ${b.rawPgbackrestSeconds} | ${b.rawMBps} |
| pg_basebackup over the cluster network, as a clone (copy only) | ${b.pgBasebackupSeconds} | ${b.basebackupMBps} |
| restored stack 1 + 0, up to verified | ${s.restoredStackSeconds} | |
| empty stack 1 + 0, up to verified | ${s.emptyStackSeconds} | |
| what the restore adds | ${s.restoreAddsSeconds} | ${s.restoredMBps} |
| pgbackrest restore by hand (files only) | ${s.rawPgbackrestRestoreSeconds} | ${s.rawMBps} |

Ours vs pgBackRest by hand, backup: ×${b.oursVsRaw}.

Where the backup's work lands (the backup step's program alone, full backups, CPU seconds each
container spent meanwhile):

| backup step | seconds | primary CPU s | standby CPU s |
| --- | ---: | ---: | ---: |
| from the standby (default)${sf.fromStandby ? "" : " (NOT: it ran on the primary)"} | ${sf.seconds} | ${sf.primaryCpu} | ${sf.standbyCpu} |
| on the primary (backupTarget primary) | ${op.seconds} | ${op.primaryCpu} | ${op.standbyCpu} |

Archive lag under pgbench TPC-B (8 clients, ${LOAD_SECONDS} s, ${a.tps} tps, ${a.samples} samples):
segments waiting p50 ${a.pendingSegmentsP50}, max ${a.pendingSegmentsMax}; bytes past the last
archived segment p50 ${a.lagMBP50} MB, max ${a.lagMBMax} MB (a segment is 16 MB: under one
segment means archiving keeps up); failed archive attempts ${a.failedCount}.
`;
}

function chart(r: Record<string, unknown>): string {
  const b = r.backup as Record<string, number>;
  const s = r.restore as Record<string, number>;
  const bars: [string, number, boolean][] = [
    ["backup: ours", b.oursSeconds, true],
    ["backup: pgbackrest", b.rawPgbackrestSeconds, false],
    ["pg_basebackup", b.pgBasebackupSeconds, false],
    ["restore adds: ours", s.restoreAddsSeconds, true],
    ["restore: pgbackrest", s.rawPgbackrestRestoreSeconds, false],
  ];
  const max = Math.max(...bars.map((x) => x[1]), 0.1);
  const w = 640;
  const rows = bars
    .map(([label, v, ours], i) => {
      const y = 40 + i * 34;
      const len = (Math.max(v, 0) / max) * (w - 240);
      return `<text x="10" y="${y + 16}" font-size="13">${label}</text><rect x="170" y="${y}" width="${len}" height="22" fill="${ours ? "#3a7bd5" : "#999"}"/><text x="${175 + len}" y="${y + 16}" font-size="12">${v} s</text>`;
    })
    .join("");
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${w}" height="${60 + bars.length * 34}" font-family="sans-serif"><text x="10" y="22" font-size="15">Backup and restore of ${b.dataMB} MB (same run, same machine)</text>${rows}</svg>\n`;
}

main().catch((err) => {
  log(`FAILED: ${err instanceof Error ? err.stack : String(err)}`);
  process.exit(1);
});
