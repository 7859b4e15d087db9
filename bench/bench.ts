/**
 * `npm run bench`: time to a verified cluster, scale-out, no-op update, switchover, a reload and an
 * image roll under clients, replay lag and memory,
 * side by side with the seed tutorial's docker-compose setup and the physical floor, all measured
 * in the same run on the same image, on the real Pulumi engine (the toolchain's CLI and plugins; it
 * stops at once, naming what is missing, if a plugin is not installed). Prints a table; writes
 * results.json, results.md and chart.svg to bench/results/. Not a pass/fail test.
 *
 * Env: BENCH_RUNS (default 3), BENCH_LOAD_SECONDS (pgbench duration, default 60),
 * BENCH_SCALE_GB (data for the scale-out case, default 1), BENCH_IMAGE (default pg-cluster-postgres:15).
 * BENCH_SMOKE=1 runs everything once with short loads.
 */
import { execFileSync, spawn, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { LocalWorkspace } from "@pulumi/pulumi/automation";
import { PulumiStack, UpResult, requirePulumiPlugins } from "../tests/lib/pulumiStack";
import { RoleProbe } from "../tests/lib/roleProbe";
import { AckWriter } from "../tests/lib/writer";
import {
  IMAGE,
  OUT,
  ROOT,
  SMOKE,
  clusterConfig,
  logger,
  pgBinDir,
  quantile,
  r1,
  sleep,
} from "./lib";

const RUNS = Number(process.env.BENCH_RUNS ?? (SMOKE ? 1 : 3));
const LOAD_SECONDS = Number(process.env.BENCH_LOAD_SECONDS ?? (SMOKE ? 10 : 60));
const SCALE_GB = Number(process.env.BENCH_SCALE_GB ?? (SMOKE ? 0.2 : 1));
const PEER_IMAGE = "pg-cluster-peer:15";
const PASSWORD = "bench-Password-1";
// Below Linux's ephemeral range (32768-60999): a published port in it can collide with the local
// end of an outgoing connection ("bind: address already in use"), which failed a run at 41001.
const PORT = 26000;
const PG_BIN = pgBinDir();

const results: Record<string, unknown> = {
  date: new Date().toISOString(),
  machine: {
    cpus: os.cpus().length,
    memGiB: Math.round(os.totalmem() / 2 ** 30),
    kernel: os.release(),
  },
  image: IMAGE,
  engine: `real pulumi up (CLI v${process.env.PULUMI_VERSION} with the toolchain's docker/command plugins; see README)`,
  runs: RUNS,
};

const log = logger("bench");
const now = () => performance.now();
const stats = (xs: number[]) => ({
  min: quantile(xs, 0),
  median: quantile(xs, 0.5),
  p99: quantile(xs, 0.99),
  max: quantile(xs, 1),
  n: xs.length,
});
const r2 = (x: number) => Math.round(x * 100) / 100;
/** `docker:index/container:Container` → `Container`. */
const shortType = (t: string) => t.split(":").pop() ?? t;

/** An up's steps on custom resources (not components or providers), in order of start. */
function customSteps(r: UpResult): UpResult["timings"] {
  return r.timings
    .filter((t) => !t.type.startsWith("pg-cluster:") && !t.type.startsWith("pulumi:"))
    .sort((a, b) => a.startMs - b.startMs);
}

/** One up's custom-resource steps, in ms from its start. */
interface Phases {
  verifiedMs: number;
  engineMs: number;
  steps: UpResult["timings"];
}

function sh(cmd: string, args: string[], env: Record<string, string> = {}, cwd = ROOT): string {
  return execFileSync(cmd, args, {
    cwd,
    env: { ...process.env, ...env },
    encoding: "utf8",
    stdio: ["ignore", "pipe", "pipe"],
  });
}

function psql(port: number, sql: string, password = PASSWORD, user = "postgres"): string | null {
  const r = spawnSync(
    `${PG_BIN}/psql`,
    ["-XAt", "-h", "127.0.0.1", "-p", String(port), "-U", user, "-d", "mydb", "-c", sql],
    {
      encoding: "utf8",
      env: { ...process.env, PGPASSWORD: password, PGCONNECT_TIMEOUT: "2" },
      // The acknowledged ids of a whole run exceed spawnSync's 1 MiB default; past it the child
      // is killed and the read looked like a refused session (the roll-back row "lost" them all).
      maxBuffer: 1 << 28,
    },
  );
  return r.status === 0 ? r.stdout.trim() : null;
}

function config(replicas: number, extra: Record<string, string> = {}): Record<string, string> {
  return clusterConfig(PORT, replicas, PASSWORD, extra);
}

/** One throwaway stack of the program on the real Pulumi engine. */
function newStack(tag: string): {
  up(c: Record<string, string>): Promise<UpResult>;
  destroy(): Promise<void>;
} {
  const p = new PulumiStack(`bench${tag}`);
  return { up: (c) => p.up(c), destroy: () => p.remove() };
}

/**
 * `pulumi up` start → the post-step done (the cluster verified): the issue's measure. The
 * Automation API's call returns later, after reading the outputs back with another CLI run
 * (tests/lib/pulumiStack.ts); a user's `pulumi up` does not pay that.
 */
function verifiedSeconds(r: UpResult): number {
  if (r.verifiedMs === undefined) throw new Error("the post-step did not run in this up");
  return r.verifiedMs / 1000;
}

/** 1. up → verified replication, fresh stack, for several replica counts. */
async function timeToVerified(): Promise<Record<string, ReturnType<typeof stats>>> {
  const out: Record<string, ReturnType<typeof stats>> = {};
  const destroys: number[] = [];
  for (const n of SMOKE ? [0, 2] : [0, 1, 2, 4]) {
    const times: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      const s = newStack(`v${n}${i}`);
      const r = await s.up(config(n));
      times.push(verifiedSeconds(r));
      const t0 = now();
      await s.destroy();
      if (n === 2) destroys.push((now() - t0) / 1000);
    }
    out[`${n}`] = stats(times);
    log(`ours, ${n} replica(s): median ${r1(out[`${n}`].median)} s`);
  }
  results.destroy = stats(destroys);
  return out;
}

/** `npm run up`'s stack in the benchmark: its own name, ports and config file, in the repo's .state. */
const UP_STACK = "benchup";
const UP_CONFIG = path.join(ROOT, ".state", `Pulumi.${UP_STACK}.yaml`);
/** The environment `npm run up` gives the CLI (scripts/dev-stack.sh), for the bare runs. */
const upEnv = () => ({
  ...process.env,
  PG_CLUSTER_STACK: UP_STACK,
  PULUMI_BACKEND_URL: `file://${path.join(ROOT, ".state")}`,
  PULUMI_CONFIG_PASSPHRASE: process.env.PULUMI_CONFIG_PASSPHRASE ?? "",
});

/** Runs a command as a user would (wall clock, in seconds); throws with its output on failure. */
function timed(cmd: string, args: string[]): { seconds: number; stderr: string } {
  const t0 = now();
  const r = spawnSync(cmd, args, { cwd: ROOT, env: upEnv(), encoding: "utf8" });
  const seconds = (now() - t0) / 1000;
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(" ")} failed:\n${r.stdout}\n${r.stderr}`);
  return { seconds, stderr: r.stderr };
}

/** `pulumi ARGS` on `npm run up`'s bench stack with its config file. */
const pulumiUp = (...args: string[]) =>
  timed("pulumi", [...args, "--stack", UP_STACK, "--config-file", UP_CONFIG]);

/** Forgets the bench stack of `npm run up`: resources, stack, config file, stamp, config cache. */
function removeUpStack(): void {
  spawnSync(
    "pulumi",
    ["destroy", "--yes", "--skip-preview", "--stack", UP_STACK, "--config-file", UP_CONFIG],
    {
      cwd: ROOT,
      env: upEnv(),
      stdio: "ignore",
    },
  );
  spawnSync("pulumi", ["stack", "rm", "--yes", "--force", "--stack", UP_STACK], {
    cwd: ROOT,
    env: upEnv(),
    stdio: "ignore",
  });
  for (const f of [UP_CONFIG, `up-stamp.${UP_STACK}.json`, `config.${UP_STACK}.txt`]) {
    fs.rmSync(path.resolve(ROOT, ".state", f), { force: true });
  }
}

/**
 * 1b. `npm run up` as a user runs it (wall clock, npm's own start included) against a bare
 * `pulumi up --yes --skip-preview` of the same 1 + 2 stack, in turns: fresh (no resources) and
 * no-op (up already, nothing changed). A no-op `npm run up` skips `pulumi up` when its stamp says
 * the stack is current (README, "The two commands"); the runs that did are counted (a file of the
 * checkout edited during the run makes a no-op a real `pulumi up`).
 */
async function npmRunUp(): Promise<Record<string, unknown>> {
  removeUpStack();
  // A fresh checkout has no .state/ until its first `npm run up`; the backend must exist first.
  fs.mkdirSync(path.join(ROOT, ".state"), { recursive: true });
  timed("pulumi", ["stack", "init", UP_STACK, "--no-select", "--non-interactive"]);
  const settings = {
    ...config(2),
    primaryPort: String(PORT + 100),
    replicaBasePort: String(PORT + 101),
  };
  for (const [key, value] of Object.entries(settings)) {
    const secret = key.endsWith("Password");
    const r = spawnSync(
      "pulumi",
      [
        "config",
        "set",
        ...(secret ? ["--secret", key] : [key, value]),
        "--stack",
        UP_STACK,
        "--config-file",
        UP_CONFIG,
      ],
      { cwd: ROOT, env: upEnv(), encoding: "utf8", input: secret ? value : undefined },
    );
    if (r.status !== 0) throw new Error(`pulumi config set ${key}: ${r.stderr}`);
  }
  // Untimed: the first up of a new stack also reads its config file (~0.3 s, once per change of
  // the file); the timed fresh ups are the ones after `npm run down`, as a user repeats them.
  timed("npm", ["run", "up"]);
  timed("npm", ["run", "down"]);
  const fresh: number[] = [];
  const bare: number[] = [];
  const noop: number[] = [];
  const bareNoop: number[] = [];
  let skipped = 0;
  const overhead: number[] = [];
  const ours = () => {
    const r = timed("npm", ["run", "up"]);
    fresh.push(r.seconds);
    // What npm run up adds to its own pulumi up, free of pulumi up's run-to-run spread.
    const inner = /pulumi up took ([0-9.]+) s/.exec(r.stderr)?.[1];
    if (inner) overhead.push(r.seconds - Number(inner));
    for (let i = 0; i < 2; i++) {
      const r = timed("npm", ["run", "up"]);
      noop.push(r.seconds);
      if (r.stderr.includes("nothing to deploy")) skipped++;
    }
    timed("npm", ["run", "down"]);
  };
  const theirs = () => {
    bare.push(pulumiUp("up", "--yes", "--skip-preview", "--non-interactive").seconds);
    bareNoop.push(pulumiUp("up", "--yes", "--skip-preview", "--non-interactive").seconds);
    pulumiUp("destroy", "--yes", "--skip-preview", "--non-interactive");
  };
  try {
    // In turns, each first every other time: neither always finds the other's warm caches.
    for (let i = 0; i < RUNS; i++) {
      if (i % 2 === 0) {
        ours();
        theirs();
      } else {
        theirs();
        ours();
      }
    }
  } finally {
    removeUpStack();
  }
  const out = {
    fresh: stats(fresh),
    overhead: stats(overhead),
    bare: stats(bare),
    noop: { ...stats(noop), skipped },
    bareNoop: stats(bareNoop),
  };
  log(
    `npm run up fresh 1+2: median ${r2(out.fresh.median)} s (${r2(out.overhead.median)} s of it outside its pulumi up) vs bare pulumi up ${r2(out.bare.median)} s; no-op ${r2(out.noop.median)} s (${skipped}/${noop.length} skipped pulumi up) vs bare no-op pulumi up ${r2(out.bareNoop.median)} s`,
  );
  return out;
}

/** 2. The tutorial's compose setup: docker-compose up → the replica serves the 3 seeded rows. */
/** Runs docker-compose on the tutorial's setup (bench/peer), on the benchmark's ports. */
function peerCompose(...args: string[]): void {
  const env = {
    PEER_IMAGE,
    PEER_PRIMARY_PORT: String(PORT + 50),
    PEER_REPLICA_PORT: String(PORT + 51),
    PEER_PREFIX: "bench-peer",
  };
  sh("docker-compose", ["-p", "benchpeer", ...args], env, path.join(ROOT, "bench", "peer"));
}

/** Starts the tutorial's setup; resolves when its replica serves the 3 seeded rows. */
async function peerUp(): Promise<void> {
  const t0 = now();
  peerCompose("up", "-d");
  while (psql(PORT + 51, "SELECT count(*) FROM wizards", "password") !== "3") {
    if (now() - t0 > 120_000) throw new Error("the tutorial's replica never served the rows");
    await sleep(50);
  }
}

async function tutorial(): Promise<ReturnType<typeof stats>> {
  const times: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    peerCompose("down", "-v");
    const t0 = now();
    await peerUp();
    times.push((now() - t0) / 1000);
    peerCompose("down", "-v");
  }
  const s = stats(times);
  log(`tutorial 1+1: median ${r1(s.median)} s`);
  return s;
}

/** 3. The physical floor: the same work done directly, without orchestration. */
function floor(): Record<string, number> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "pgc-floor-"));
  fs.chmodSync(dir, 0o777);
  const as = (cmd: string) => {
    const t0 = now();
    execFileSync(
      "setpriv",
      ["--reuid=postgres", "--regid=postgres", "--init-groups", "bash", "-c", cmd],
      { stdio: "ignore" },
    );
    return (now() - t0) / 1000;
  };
  const p = `${dir}/p`;
  const r = `${dir}/r`;
  const opts = `-c listen_addresses=127.0.0.1 -c unix_socket_directories=${dir}`;
  const f = {
    initdb: as(`${PG_BIN}/initdb -D ${p} -A trust >/dev/null`),
    primaryStart: as(`${PG_BIN}/pg_ctl -D ${p} -o '${opts} -p ${PORT + 90}' -w start >/dev/null`),
    basebackup: as(
      `${PG_BIN}/pg_basebackup -h 127.0.0.1 -p ${PORT + 90} -D ${r} -X stream -c fast -R`,
    ),
    replicaStart: as(`${PG_BIN}/pg_ctl -D ${r} -o '${opts} -p ${PORT + 91}' -w start >/dev/null`),
    containerRun: 0,
  };
  const t0 = now();
  execFileSync("docker", ["run", "--rm", IMAGE, "true"]);
  f.containerRun = (now() - t0) / 1000;
  spawnSync("setpriv", [
    "--reuid=postgres",
    "--regid=postgres",
    "--init-groups",
    "bash",
    "-c",
    `${PG_BIN}/pg_ctl -D ${r} -m immediate stop; ${PG_BIN}/pg_ctl -D ${p} -m immediate stop`,
  ]);
  fs.rmSync(dir, { recursive: true, force: true });
  const total = f.initdb + f.primaryStart + f.basebackup + f.replicaStart + f.containerRun;
  log(`floor: ${r1(total)} s`);
  return { ...f, total };
}

/**
 * 3b. The engine floor: `pulumi up` of bench/engine-floor, a program that creates one Docker
 * network and nothing else, with the same CLI and plugins. Any cluster needs at least that.
 */
async function engineFloor(): Promise<ReturnType<typeof stats>> {
  const backend = fs.mkdtempSync(path.join(os.tmpdir(), "pgc-bench-floor-"));
  const stack = await LocalWorkspace.createOrSelectStack(
    { stackName: "floor", workDir: path.join(ROOT, "bench", "engine-floor") },
    {
      envVars: {
        PULUMI_BACKEND_URL: `file://${backend}`,
        PULUMI_CONFIG_PASSPHRASE: "bench",
        PULUMI_SKIP_UPDATE_CHECK: "true",
        PULUMI_NODEJS_TRANSPILE_ONLY: "true",
      },
    },
  );
  const times: number[] = [];
  try {
    for (let i = 0; i < RUNS; i++) {
      const t0 = Date.now();
      let engineMs = 0;
      await stack.up({ onEvent: (e) => void (e.summaryEvent && (engineMs = Date.now() - t0)) });
      times.push((engineMs || Date.now() - t0) / 1000);
      await stack.destroy();
    }
  } finally {
    await stack.workspace.removeStack("floor");
    fs.rmSync(backend, { recursive: true, force: true });
  }
  const s = stats(times);
  log(`engine floor (one network): median ${r1(s.median)} s`);
  return s;
}

/** Samples replay lag (bytes and ms) per replica every 200 ms while `work` runs. */
async function sampleLag(primaryPort: number, work: Promise<unknown>, password = PASSWORD) {
  const samples: Record<string, { bytes: number[]; ms: number[] }> = {};
  let done = false;
  work.finally(() => (done = true));
  while (!done) {
    const out = psql(
      primaryPort,
      "SELECT application_name, pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn), COALESCE(EXTRACT(epoch FROM replay_lag) * 1000, 0) FROM pg_stat_replication",
      password,
    );
    for (const line of (out ?? "").split("\n").filter(Boolean)) {
      const [name, bytes, ms] = line.split("|");
      // A replica's short slot-check connection (READ_REPLICATION_SLOT) is not a stream.
      if (name.endsWith("-control")) continue;
      samples[name] ??= { bytes: [], ms: [] };
      samples[name].bytes.push(Number(bytes));
      samples[name].ms.push(Number(ms));
    }
    await sleep(200);
  }
  await work;
  return Object.fromEntries(
    Object.entries(samples).map(([k, v]) => [k, { bytes: stats(v.bytes), ms: stats(v.ms) }]),
  );
}

function pgbench(port: number, password: string, seconds: number): Promise<string> {
  const env = { ...process.env, PGPASSWORD: password };
  execFileSync(
    `${PG_BIN}/pgbench`,
    ["-i", "-s", "10", "-q", "-h", "127.0.0.1", "-p", String(port), "-U", "postgres", "mydb"],
    { env, stdio: "ignore" },
  );
  return new Promise((resolve, reject) => {
    const p = spawn(
      `${PG_BIN}/pgbench`,
      [
        "-c",
        "8",
        "-j",
        "2",
        "-T",
        String(seconds),
        "-h",
        "127.0.0.1",
        "-p",
        String(port),
        "-U",
        "postgres",
        "mydb",
      ],
      { env },
    );
    let out = "";
    p.stdout.on("data", (c) => (out += c));
    p.on("close", (code) =>
      code === 0 ? resolve(out) : reject(new Error(`pgbench exited ${code}`)),
    );
  });
}

function memory(names: string[]): Record<string, number> {
  const out = sh("docker", [
    "stats",
    "--no-stream",
    "--format",
    "{{.Name}} {{.MemUsage}}",
    ...names,
  ]);
  return Object.fromEntries(
    out
      .trim()
      .split("\n")
      .map((l) => {
        const [name, use] = l.split(" ");
        const m = /([0-9.]+)([KMG]i?B)/.exec(use)!;
        const mib =
          Number(m[1]) *
          (
            { KiB: 1 / 1024, MiB: 1, GiB: 1024, kB: 1 / 1024, MB: 1, GB: 1024 } as Record<
              string,
              number
            >
          )[m[2]];
        return [name, r1(mib)];
      }),
  );
}

async function main(): Promise<void> {
  fs.mkdirSync(OUT, { recursive: true });
  if (process.argv.includes("--render")) {
    // Re-render the report and chart from the last results.json.
    Object.assign(results, JSON.parse(fs.readFileSync(path.join(OUT, "results.json"), "utf8")));
    fs.writeFileSync(path.join(OUT, "results.md"), report());
    fs.writeFileSync(path.join(OUT, "chart.svg"), chart());
    fs.writeFileSync(path.join(OUT, "timeline.svg"), timeline());
    process.stdout.write(report());
    return;
  }
  // Before anything is built or started: a missing plugin is named with its fix, not met halfway.
  requirePulumiPlugins();
  log(`image ${IMAGE}; building the tutorial's peer image`);
  sh("docker", [
    "build",
    "-q",
    "-t",
    PEER_IMAGE,
    "--build-arg",
    `BASE=${IMAGE}`,
    path.join(ROOT, "bench", "peer"),
  ]);

  results.floor = floor();
  results.tutorial = await tutorial();
  results.engineFloor = await engineFloor();
  results.timeToVerified = await timeToVerified();
  results.npmRunUp = await npmRunUp();

  // 4 + 8: one stack kept for the no-op up, the phase breakdown, lag, memory and scale-out.
  const s = newStack("main");
  const first: UpResult = await s.up(config(2));
  results.phases = {
    verifiedMs: first.verifiedMs,
    engineMs: first.engineMs,
    steps: customSteps(first),
  };
  const noop: number[] = [];
  let noopChanges = 0;
  for (let i = 0; i < RUNS; i++) {
    const r = await s.up(config(2));
    // No post-step runs in a no-op up: until the engine is done.
    noop.push(r.engineMs / 1000);
    noopChanges += r.summary.create + r.summary.update + r.summary.replace + r.summary.delete;
  }
  results.noopUp = { ...stats(noop), changes: noopChanges };
  log(`no-op up: median ${r1(stats(noop).median)} s, ${noopChanges} changes`);

  // Planned switchover to replica 1 and back, under a client writing through the published ports.
  results.switchover = await switchovers(s);
  // A reload-only change, then an image roll (a second tag of the same image), under clients.
  results.changes = await changes(s);

  // 7. Memory idle.
  const nodes = [
    "pg-cluster-benchmain-primary",
    "pg-cluster-benchmain-replica-1",
    "pg-cluster-benchmain-replica-2",
  ];
  const memIdle = memory(nodes);

  // 6. Lag under pgbench, ours.
  let memLoad: Record<string, number> = {};
  const work = pgbench(PORT, PASSWORD, LOAD_SECONDS);
  const memProbe = (async () => {
    await sleep((LOAD_SECONDS * 1000) / 2);
    memLoad = memory(nodes);
  })();
  const lagOurs = await sampleLag(PORT, work);
  await memProbe;
  const tps = /tps = ([0-9.]+)/.exec(await work)?.[1];
  results.memoryMiB = { idle: memIdle, underLoad: memLoad };
  log(`lag ours: ${JSON.stringify(lagOurs)}`);

  // 6. Lag under pgbench, the tutorial's configuration on the same image.
  await peerUp();
  const peerWork = pgbench(PORT + 50, "password", LOAD_SECONDS);
  const lagPeer = await sampleLag(PORT + 50, peerWork, "password");
  const peerTps = /tps = ([0-9.]+)/.exec(await peerWork)?.[1];
  peerCompose("down", "-v");
  results.lag = {
    ours: { tps: Number(tps), perReplica: lagOurs },
    tutorial: { tps: Number(peerTps), perReplica: lagPeer },
  };

  // 5. Scale-out +1 on ~SCALE_GB of data, against a raw pg_basebackup of the same data.
  log(`loading ~${SCALE_GB} GB for the scale-out case`);
  const rows = Math.round((SCALE_GB * 1024 * 1024) / 1.2);
  for (let done = 0; done < rows; done += 200_000) {
    psql(
      PORT,
      `CREATE TABLE IF NOT EXISTS bulk (id bigserial, payload text); INSERT INTO bulk (payload) SELECT repeat(md5(g::text), 32) FROM generate_series(1, ${Math.min(200_000, rows - done)}) g`,
    );
  }
  psql(PORT, "CHECKPOINT");
  const dbSize = psql(PORT, "SELECT pg_database_size('mydb')");
  const scaleUp = await s.up(config(3));
  const scaleOut = verifiedSeconds(scaleUp);
  const raw = sh("docker", [
    "run",
    "--rm",
    "--network",
    "pg-cluster-benchmain-net",
    "-e",
    `PGPASSWORD=${PASSWORD}r`,
    "--entrypoint",
    "bash",
    IMAGE,
    "-c",
    "s=$(date +%s%N); pg_basebackup -h pg-cluster-benchmain-primary -U replicator -D /tmp/raw -X stream -c fast >/dev/null && echo $(( ($(date +%s%N) - s) / 1000000 ))",
  ]).trim();
  results.scaleOut = {
    dataBytes: Number(dbSize),
    oursSeconds: scaleOut,
    rawBasebackupSeconds: Number(raw) / 1000,
    ratio: scaleOut / (Number(raw) / 1000),
    steps: customSteps(scaleUp),
  };
  log(`scale-out: ${r1(scaleOut)} s vs raw pg_basebackup ${r1(Number(raw) / 1000)} s`);
  await s.destroy();

  const tv = results.timeToVerified as Record<string, ReturnType<typeof stats>>;
  const tut = results.tutorial as ReturnType<typeof stats>;
  const fl = results.floor as Record<string, number>;
  results.ratios = {
    ours2VsTutorial1: tv["2"].median / tut.median,
    ours2VsFloor: tv["2"].median / fl.total,
  };
  fs.writeFileSync(path.join(OUT, "results.json"), JSON.stringify(results, null, 2) + "\n");
  fs.writeFileSync(path.join(OUT, "results.md"), report());
  fs.writeFileSync(path.join(OUT, "chart.svg"), chart());
  fs.writeFileSync(path.join(OUT, "timeline.svg"), timeline());
  process.stdout.write(report());
}

/**
 * The primary moved by config (`primary`) to replica 1 and back, each under two writers that
 * record every acknowledged id, one on the nodes' own ports and one as applications write, on the
 * router's read-write endpoint: the longest gap between two acknowledged writes of each, the ids
 * lost (must be none), and the time of the switchover's `pulumi up` (to the post-step's end).
 */
async function switchovers(s: ReturnType<typeof newStack>): Promise<Record<string, unknown>[]> {
  psql(PORT, "CREATE TABLE IF NOT EXISTS bench_acked (id bigint PRIMARY KEY)");
  const endpoints = [0, 1, 2].map((i) => `localhost:${PORT + i}`);
  const out: Record<string, unknown>[] = [];
  for (const [i, target] of [
    "pg-cluster-benchmain-replica-1",
    "pg-cluster-benchmain-primary",
  ].entries()) {
    const writer = new AckWriter({
      endpoints,
      password: PASSWORD,
      table: "bench_acked",
      firstId: 1 + i * 10_000_000,
    });
    const routed = new AckWriter({
      endpoints: [`localhost:${PORT - 2}`],
      password: PASSWORD,
      table: "bench_acked",
      firstId: 5_000_000 + i * 10_000_000,
    });
    writer.start();
    routed.start();
    await sleep(500);
    const r = await s.up(config(2, { primary: target }));
    await sleep(500);
    await Promise.all([writer.stop(), routed.stop()]);
    const targetPort = PORT + (target.endsWith("replica-1") ? 1 : 0);
    const have = await ackedIds(targetPort);
    const acked = [...writer.acked, ...routed.acked];
    const row = {
      to: target,
      upSeconds: verifiedSeconds(r),
      longestGapMs: writer.longestGapMs(),
      routerLongestGapMs: routed.longestGapMs(),
      acknowledged: acked.length,
      lost: acked.filter((id) => !have.has(id)).length,
    };
    log(`switchover to ${target}: ${JSON.stringify(row)}`);
    out.push(row);
  }
  return out;
}

/**
 * The ids in bench_acked, read on `port`: retried for a while (a session right after an up may
 * be refused), and an error rather than an empty set if it never answers, so a row never reports
 * writes as lost that were only unread.
 */
async function ackedIds(port: number): Promise<Set<number>> {
  for (let i = 0; ; i++) {
    const out = psql(port, "SELECT id FROM bench_acked");
    if (out !== null) return new Set(out.split("\n").filter(Boolean).map(Number));
    if (i >= 40) throw new Error(`cannot read bench_acked on port ${port} after the up`);
    await sleep(250);
  }
}

/**
 * A change to a running 1 + 2 cluster under clients of the router: a writer on the read-write
 * endpoint (acknowledged ids), a psql reader opening a session per query and a node-postgres
 * reader keeping one, both on the read-only endpoint. For a reload-only change (`maxWalSize`) and
 * an image roll (a second tag of the same image): the longest write gap, the longest read gap of
 * each reader and its failed queries, the containers replaced and servers restarted, the up's time.
 */
async function changes(s: ReturnType<typeof newStack>): Promise<Record<string, unknown>[]> {
  const names = ["primary", "replica-1", "replica-2"].map((n) => `pg-cluster-benchmain-${n}`);
  const rolled = `${IMAGE}-benchroll`;
  sh("docker", ["tag", IMAGE, rolled]);
  const state = () =>
    names.map((n, i) => ({
      id: sh("docker", ["inspect", "-f", "{{.Id}}", n]).trim(),
      server: psql(PORT + i, "SELECT pg_postmaster_start_time()") ?? "",
    }));
  const out: Record<string, unknown>[] = [];
  for (const [change, extra] of [
    ["reload: maxWalSize 1GB -> 2GB", { maxWalSize: "2GB" }],
    [`roll: image ${IMAGE} -> ${rolled}`, { maxWalSize: "2GB", image: rolled }],
    // Back to the base config, so the cases after this one run on it.
    [`roll back: image -> ${IMAGE}, maxWalSize -> 1GB`, {}],
  ] as const) {
    const before = state();
    const writer = new AckWriter({
      endpoints: [`localhost:${PORT - 2}`],
      password: PASSWORD,
      table: "bench_acked",
      firstId: 100_000_000 + out.length * 10_000_000,
    });
    const probe = (client: "psql" | "node-postgres") =>
      new RoleProbe({ endpoint: `localhost:${PORT - 1}`, password: PASSWORD, client });
    const readers = { psql: probe("psql"), nodePostgres: probe("node-postgres") };
    writer.start();
    readers.psql.start();
    readers.nodePostgres.start();
    await sleep(500);
    const r = await s.up(config(2, { ...extra }));
    await sleep(500);
    await Promise.all([writer.stop(), readers.psql.stop(), readers.nodePostgres.stop()]);
    const after = state();
    const have = await ackedIds(PORT - 2);
    const reader = (p: RoleProbe) => ({
      longestGapMs: p.longestSilenceMs(),
      failed: p.observations.filter((o) => o.error).length,
      onPrimary: p.answers().filter((a) => !a.standby).length,
    });
    const row = {
      change,
      upSeconds: verifiedSeconds(r),
      longestWriteGapMs: writer.longestGapMs(),
      acknowledged: writer.acked.length,
      lost: writer.acked.filter((id) => !have.has(id)).length,
      readPsql: reader(readers.psql),
      readNodePostgres: reader(readers.nodePostgres),
      replaced: after.filter((x, i) => x.id !== before[i].id).length,
      restarted: after.filter((x, i) => x.id === before[i].id && x.server !== before[i].server)
        .length,
    };
    log(`change ${change}: ${JSON.stringify(row)}`);
    out.push(row);
  }
  sh("docker", ["rmi", rolled]);
  return out;
}

function report(): string {
  const tv = results.timeToVerified as Record<string, ReturnType<typeof stats>>;
  const tut = results.tutorial as ReturnType<typeof stats>;
  const fl = results.floor as Record<string, number>;
  const no = results.noopUp as ReturnType<typeof stats> & { changes: number };
  const so = results.scaleOut as {
    dataBytes: number;
    oursSeconds: number;
    rawBasebackupSeconds: number;
    ratio: number;
    steps?: UpResult["timings"];
  };
  const lag = results.lag as Record<
    string,
    {
      tps: number;
      perReplica: Record<string, { bytes: ReturnType<typeof stats>; ms: ReturnType<typeof stats> }>;
    }
  >;
  const mem = results.memoryMiB as {
    idle: Record<string, number>;
    underLoad: Record<string, number>;
  };
  const ph = results.phases as Phases;
  const ef = results.engineFloor as ReturnType<typeof stats> | null | undefined;
  const dn = results.destroy as ReturnType<typeof stats> | undefined;
  const nu = results.npmRunUp as
    | {
        fresh: ReturnType<typeof stats>;
        overhead?: ReturnType<typeof stats>;
        bare: ReturnType<typeof stats>;
        noop: ReturnType<typeof stats> & { skipped: number };
        bareNoop: ReturnType<typeof stats>;
      }
    | undefined;
  const sw = (results.switchover ?? []) as {
    to: string;
    upSeconds: number;
    longestGapMs: number;
    routerLongestGapMs?: number;
    acknowledged: number;
    lost: number;
  }[];
  const lines = [
    `# pg-cluster benchmark (${results.date}, ${RUNS} run(s) each, image ${IMAGE})`,
    "",
    `Engine: ${results.engine}.`,
    "",
    "| measure | min | median |",
    "| --- | --- | --- |",
    ...Object.entries(tv).map(
      ([n, s]) => `| ours: up → verified, ${n} replica(s) | ${r1(s.min)} s | ${r1(s.median)} s |`,
    ),
    `| tutorial compose, 1 replica: up → replica serves rows | ${r1(tut.min)} s | ${r1(tut.median)} s |`,
    `| physical floor (initdb ${r1(fl.initdb)} + start ${r1(fl.primaryStart)} + basebackup ${r1(fl.basebackup)} + replica start ${r1(fl.replicaStart)} + container run ${r1(fl.containerRun)}) | | ${r1(fl.total)} s |`,
    ...(ef
      ? [
          `| engine floor: pulumi up of a program with one Docker network only | ${r1(ef.min)} s | ${r1(ef.median)} s |`,
        ]
      : []),
    ...(dn
      ? [
          `| destroy of 1 + 2 (pulumi destroy, then the stack removed) | ${r1(dn.min)} s | ${r1(dn.median)} s |`,
        ]
      : []),
    `| no-op up (${no.changes} changes in all runs) | ${r1(no.min)} s | ${r1(no.median)} s |`,
    ...(nu
      ? [
          `| \`npm run up\`, fresh 1 + 2 (wall clock, npm included) | ${r2(nu.fresh.min)} s | ${r2(nu.fresh.median)} s |`,
          ...(nu.overhead
            ? [
                `| … of which outside its own \`pulumi up\` (npm, checks, stamp, report) | ${r2(nu.overhead.min)} s | ${r2(nu.overhead.median)} s |`,
              ]
            : []),
          `| bare \`pulumi up --yes --skip-preview\` of the same stack, fresh | ${r2(nu.bare.min)} s | ${r2(nu.bare.median)} s |`,
          `| \`npm run up\`, no-op (${nu.noop.skipped} of ${nu.noop.n} runs skipped \`pulumi up\`) | ${r2(nu.noop.min)} s | ${r2(nu.noop.median)} s |`,
          `| bare \`pulumi up --yes --skip-preview\`, no-op | ${r2(nu.bareNoop.min)} s | ${r2(nu.bareNoop.median)} s |`,
        ]
      : []),
    `| scale-out +1 replica on ${r1(so.dataBytes / 2 ** 30)} GiB | | ${r1(so.oursSeconds)} s (raw pg_basebackup ${r1(so.rawBasebackupSeconds)} s, ×${r1(so.ratio)}) |`,
    ...sw.map(
      (x) =>
        `| planned switchover to ${x.to}: \`pulumi up\` → verified; longest gap between acknowledged writes (goal ≤ 1 s) on the router's read-write endpoint, and on the nodes' own ports; lost of acknowledged | | ${r1(x.upSeconds)} s; **${x.routerLongestGapMs ?? "–"} ms**, ${x.longestGapMs} ms; ${x.lost} of ${x.acknowledged} |`,
    ),
    ...((results.changes ?? []) as ChangeRow[]).map(
      (x) =>
        `| ${x.change} under a writer (read-write endpoint) and readers (read-only endpoint): \`pulumi up\` → verified; longest write gap (goal: reload 0, roll ≤ 1 s); longest read gap, psql session per query / node-postgres one session (goal 0 failed); containers replaced, servers restarted; lost of acknowledged | | ${r1(x.upSeconds)} s; **${x.longestWriteGapMs} ms**; **${x.readPsql.longestGapMs} ms, ${x.readPsql.failed} failed** / ${x.readNodePostgres.longestGapMs} ms, ${x.readNodePostgres.failed} failed; ${x.replaced} replaced, ${x.restarted} restarted; ${x.lost} of ${x.acknowledged} |`,
    ),
    "",
    `Scale-out steps, in seconds from the start of its \`pulumi up\`: ${(so.steps ?? []).map((p) => `${p.name} (${shortType(p.type)}) ${r2(p.startMs / 1000)}–${r2(p.endMs / 1000)}`).join("; ")}.`,
    "",
    ...(nu
      ? [
          `\`npm run up\` (medians): fresh 1 + 2 ÷ bare \`pulumi up\` = **${(nu.fresh.median / nu.bare.median).toFixed(2)}** (${nu.fresh.median >= nu.bare.median ? "+" : "−"}${r2(Math.abs(nu.fresh.median - nu.bare.median))} s; target within 1 s${nu.overhead ? `; outside its own \`pulumi up\`: ${r2(nu.overhead.median)} s` : ""}); no-op = **${r2(nu.noop.median)} s** (target ≤ 3 s), ÷ a bare no-op \`pulumi up\` = **${(nu.noop.median / nu.bareNoop.median).toFixed(2)}**.`,
          "",
        ]
      : []),
    `Ratios: ours (1+2) ÷ tutorial (1+1) = **${(tv["2"].median / tut.median).toFixed(2)}** (target ≤ 0.8); ours (1+2) ÷ floor = **${(tv["2"].median / fl.total).toFixed(2)}** (target ≤ 2.5).`,
    ...(ef
      ? [
          "",
          `The engine floor alone is ${(ef.median / tut.median).toFixed(2)}× the tutorial${ef.median > 0.8 * tut.median ? ": the 0.8× target is out of reach for any program on this engine and docker provider" : ""}. The 2.5× floor target (${r1(2.5 * fl.total)} s) leaves ${2.5 * fl.total <= ef.median ? "nothing" : `${r1(2.5 * fl.total - ef.median)} s`} above the engine floor for the cluster's own work${2.5 * fl.total - ef.median < fl.total ? `, less than the physical floor's ${r1(fl.total)} s of it` : ""}. Above the engine floor, ours (1+2) takes ${r1(tv["2"].median - ef.median)} s: ${((tv["2"].median - ef.median) / fl.total).toFixed(2)}× the physical floor, for one more replica than the floor and the tutorial have.`,
        ]
      : []),
    "",
    `Replay lag under pgbench TPC-B (8 clients, ${LOAD_SECONDS} s):`,
    "",
    "| setup | tps | replica | lag p50 | lag p99 | bytes p50 | bytes p99 |",
    "| --- | --- | --- | --- | --- | --- | --- |",
    ...Object.entries(lag).flatMap(([who, l]) =>
      Object.entries(l.perReplica).map(
        ([name, s]) =>
          `| ${who} | ${Math.round(l.tps)} | ${name} | ${r1(s.ms.median)} ms | ${r1(s.ms.p99)} ms | ${Math.round(s.bytes.median)} | ${Math.round(s.bytes.p99)} |`,
      ),
    ),
    "",
    "Memory per node (container RSS+cache as docker stats reports it, MiB):",
    "",
    "| node | idle | under load |",
    "| --- | --- | --- |",
    ...Object.keys(mem.idle).map((n) => `| ${n} | ${mem.idle[n]} | ${mem.underLoad[n] ?? ""} |`),
    "",
    `Where the time of one up (1 primary + 2 replicas, verified at ${r2(ph.verifiedMs / 1000)} s) goes, in seconds from the start of \`pulumi up\` (timeline.svg):`,
    "",
    "| resource | type | start | end | took |",
    "| --- | --- | --- | --- | --- |",
    `| (engine: CLI, language host, program, plugins) | | 0 | ${r2(ph.steps[0].startMs / 1000)} | ${r2(ph.steps[0].startMs / 1000)} |`,
    ...ph.steps.map(
      (p) =>
        `| ${p.name} | ${shortType(p.type)} | ${r2(p.startMs / 1000)} | ${r2(p.endMs / 1000)} | ${r2((p.endMs - p.startMs) / 1000)} |`,
    ),
    `| (engine: finishing, state written) | | ${r2(ph.verifiedMs / 1000)} | ${r2(ph.engineMs / 1000)} | ${r2((ph.engineMs - ph.verifiedMs) / 1000)} |`,
    "",
  ];
  return lines.join("\n");
}

/** One row of the changes case (see {@link changes}). */
interface ChangeRow {
  change: string;
  upSeconds: number;
  longestWriteGapMs: number;
  acknowledged: number;
  lost: number;
  readPsql: { longestGapMs: number; failed: number; onPrimary: number };
  readNodePostgres: { longestGapMs: number; failed: number; onPrimary: number };
  replaced: number;
  restarted: number;
}

function chart(): string {
  const tv = results.timeToVerified as Record<string, ReturnType<typeof stats>>;
  const tut = results.tutorial as ReturnType<typeof stats>;
  const fl = results.floor as Record<string, number>;
  const ef = results.engineFloor as ReturnType<typeof stats> | null | undefined;
  const bars: [string, number][] = [
    ["floor (1+1)", fl.total],
    ["tutorial (1+1)", tut.median],
    ...(ef ? [["engine floor", ef.median] as [string, number]] : []),
    ...Object.entries(tv).map(([n, s]) => [`ours (1+${n})`, s.median] as [string, number]),
  ];
  const max = Math.max(...bars.map((b) => b[1]));
  const w = 640;
  const rows = bars
    .map(([label, v], i) => {
      const y = 40 + i * 34;
      const len = (v / max) * (w - 220);
      return `<text x="10" y="${y + 16}" font-size="13">${label}</text><rect x="150" y="${y}" width="${len}" height="22" fill="${label.startsWith("ours") ? "#3a7bd5" : "#999"}"/><text x="${155 + len}" y="${y + 16}" font-size="12">${v.toFixed(1)} s</text>`;
    })
    .join("");
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${w}" height="${60 + bars.length * 34}" font-family="sans-serif"><text x="10" y="22" font-size="15">Time to a verified cluster (median, same machine, same run)</text>${rows}</svg>\n`;
}

/** A Gantt chart of one up: where the time goes. */
function timeline(): string {
  const ph = results.phases as Phases;
  const bars: { label: string; start: number; end: number; color: string }[] = [
    { label: "engine start", start: 0, end: ph.steps[0].startMs, color: "#999" },
    ...ph.steps.map((p) => ({
      label: `${shortType(p.type)} ${p.name}`,
      start: p.startMs,
      end: p.endMs,
      color: p.type.startsWith("command:") ? "#e09b3d" : "#3a7bd5",
    })),
    { label: "engine finish", start: ph.verifiedMs, end: ph.engineMs, color: "#999" },
  ];
  const w = 900;
  const left = 330;
  const scale = (w - left - 60) / ph.engineMs;
  const rows = bars
    .map((b, i) => {
      const y = 40 + i * 22;
      const x = left + b.start * scale;
      const len = Math.max(1, (b.end - b.start) * scale);
      return `<text x="10" y="${y + 13}" font-size="11">${b.label}</text><rect x="${x}" y="${y}" width="${len}" height="16" fill="${b.color}"/><text x="${x + len + 4}" y="${y + 13}" font-size="10">${((b.end - b.start) / 1000).toFixed(2)} s</text>`;
    })
    .join("");
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${w}" height="${60 + bars.length * 22}" font-family="sans-serif"><text x="10" y="22" font-size="14">One pulumi up, 1 primary + 2 replicas: verified at ${(ph.verifiedMs / 1000).toFixed(2)} s</text>${rows}</svg>\n`;
}

main().catch((err) => {
  log(`FAILED: ${err instanceof Error ? err.stack : String(err)}`);
  process.exit(1);
});
