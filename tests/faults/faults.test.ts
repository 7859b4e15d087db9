import * as assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { after, before, describe, it } from "node:test";
import {
  CountingWriter,
  accepting,
  dockerCli,
  ensureStarted,
  missingIds,
  streaming,
  tableDigest,
  waitCaughtUp,
  writeWal,
} from "../lib/faults";
import { AckWriter } from "../lib/writer";
import {
  REPLICATION_PASSWORD,
  SUPERUSER_PASSWORD,
  newStack,
  queryAt,
  waitUntil,
} from "../lib/stack";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const ROOT = path.resolve(__dirname, "..", "..");
/** A node's demotion marker (ctl.sh), in its volume. */
const HOLD = "/var/lib/postgresql/data/conf/hold";

describe("faults on a primary and 2 replicas", { timeout: 20 * 60_000 }, () => {
  // A small max_wal_size so "several times max_wal_size" of WAL is quick to write.
  const stack = newStack("flt", { maxWalSize: "128MB" });
  const c = stack.clusterName;
  const primary = `localhost:${stack.basePort}`;
  const replicas = [`localhost:${stack.basePort + 1}`, `localhost:${stack.basePort + 2}`];
  const nodes = [primary, ...replicas];
  before(async () => {
    await stack.up();
  });
  after(async () => {
    await stack.remove();
  });

  it("1. SIGKILL of a replica under write load: every replica ends with exactly the primary's rows", async (t) => {
    const writer = new CountingWriter(primary, "load_kill");
    await writer.prepare();
    writer.start();
    t.after(() => writer.stop());
    await sleep(1500);
    dockerCli("kill", "-s", "KILL", `${c}-replica-1`);
    await sleep(1000);
    const t0 = Date.now();
    ensureStarted(`${c}-replica-1`);
    const back = await waitUntil(
      "replica-1 streaming again",
      async () => (await streaming(primary)).includes(`${c}-replica-1`),
      60_000,
    );
    await sleep(1500);
    const acked = await writer.stop();
    await waitCaughtUp(primary, replicas);
    const want = await tableDigest(primary, "load_kill");
    for (const r of replicas)
      assert.deepEqual(await tableDigest(r, "load_kill"), want, `rows and checksum on ${r}`);
    assert.deepEqual(await missingIds(primary, "load_kill", acked), []);
    assert.ok(acked.length > 100, `the writer committed rows during the fault (${acked.length})`);
    t.diagnostic(
      `replica SIGKILL: streaming again ${back + (Date.now() - t0 - back)} ms after start; ${want.rows} rows compared on ${replicas.length} replicas`,
    );
  });

  it("2a. a replica stopped while the primary writes ~5x max_wal_size catches up from its slot, no re-clone", async (t) => {
    dockerCli("stop", `${c}-replica-2`);
    const rows = await writeWal(primary, "load_stopped", 640);
    const [slot] = await queryAt<{ wal_status: string; retained: string }>(
      primary,
      "SELECT wal_status, pg_size_pretty(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)) AS retained FROM pg_replication_slots WHERE slot_name = 'replica_2'",
    );
    assert.notEqual(slot.wal_status, "lost");
    const t0 = Date.now();
    dockerCli("start", `${c}-replica-2`);
    await waitUntil(
      "replica-2 streaming",
      async () => (await streaming(primary)).includes(`${c}-replica-2`),
      120_000,
    );
    await waitCaughtUp(primary, [replicas[1]], 180_000);
    const caughtUp = Date.now() - t0;
    assert.deepEqual(
      await tableDigest(replicas[1], "load_stopped", "payload"),
      await tableDigest(primary, "load_stopped", "payload"),
    );
    const state = JSON.parse(
      dockerCli(
        "exec",
        `${c}-replica-2`,
        "cat",
        "/var/lib/postgresql/data/pgdata/pg-cluster-node.json",
      ),
    );
    assert.equal(state.clones, 1, "caught up without re-cloning");
    t.diagnostic(
      `stopped replica: slot retained ${slot.retained}; caught up ${caughtUp} ms after start; ${rows} rows compared`,
    );
  });

  it("3. docker restart of the primary under load: replicas reattach within 10 s of it being ready, no acknowledged row lost", async (t) => {
    const writer = new CountingWriter(primary, "load_restart", 1_000_000);
    await writer.prepare();
    writer.start();
    t.after(() => writer.stop());
    await sleep(1000);
    const restart = spawnSync("docker", ["restart", "-t", "30", `${c}-primary`]);
    assert.equal(restart.status, 0);
    await waitUntil("primary accepting", () => accepting(primary), 60_000);
    const ready = Date.now();
    await waitUntil(
      "both replicas streaming",
      async () => (await streaming(primary)).length === 2,
      10_000,
    );
    const reattach = Date.now() - ready;
    await sleep(1000);
    const acked = await writer.stop();
    await waitCaughtUp(primary, replicas);
    for (const n of nodes)
      assert.deepEqual(await missingIds(n, "load_restart", acked), [], `acknowledged rows on ${n}`);
    t.diagnostic(
      `primary restart: replicas reattached ${reattach} ms after the primary was ready; ${acked.length} acknowledged rows checked on 3 nodes`,
    );
  });

  it("4. SIGKILL of the primary: it recovers, replicas reattach, no acknowledged row lost", async (t) => {
    const writer = new CountingWriter(primary, "load_crash", 2_000_000);
    await writer.prepare();
    writer.start();
    t.after(() => writer.stop());
    await sleep(1500);
    dockerCli("kill", "-s", "KILL", `${c}-primary`);
    const killed = Date.now();
    await sleep(500);
    ensureStarted(`${c}-primary`);
    await waitUntil("primary accepting after crash recovery", () => accepting(primary), 120_000);
    const recovered = Date.now() - killed;
    const ready = Date.now();
    await waitUntil(
      "both replicas streaming",
      async () => (await streaming(primary)).length === 2,
      30_000,
    );
    const reattach = Date.now() - ready;
    await sleep(1000);
    const acked = await writer.stop();
    await waitCaughtUp(primary, replicas);
    for (const n of nodes)
      assert.deepEqual(await missingIds(n, "load_crash", acked), [], `acknowledged rows on ${n}`);
    t.diagnostic(
      `primary SIGKILL: accepting ${recovered} ms after the kill, replicas reattached ${reattach} ms later; ${acked.length} acknowledged rows checked`,
    );
  });

  it("5. up after a container was stopped by hand brings it back and never re-initialises its data", async () => {
    const before = await tableDigest(replicas[0], "load_kill");
    dockerCli("stop", `${c}-replica-1`);
    // Like `npm run up`, read live state first so the stopped container is noticed.
    const { summary } = await stack.up(undefined, { refresh: true });
    // The docker provider's refresh drops a stopped container from state, so up recreates it
    // (and re-runs the topology step and the post-step): a new container on the same volume.
    assert.equal(summary.replace, 3, JSON.stringify(summary));
    assert.equal(summary.create + summary.delete, 0, JSON.stringify(summary));
    assert.equal(dockerCli("inspect", "-f", "{{.State.Running}}", `${c}-replica-1`), "true");
    await waitCaughtUp(primary, [replicas[0]]);
    assert.deepEqual(await tableDigest(replicas[0], "load_kill"), before);
    const state = JSON.parse(
      dockerCli(
        "exec",
        `${c}-replica-1`,
        "cat",
        "/var/lib/postgresql/data/pgdata/pg-cluster-node.json",
      ),
    );
    assert.equal(state.clones, 1, "never re-initialised");
  });

  it("6. synchronous ANY 1: every acknowledged commit is on a replica when the primary dies right after", async (t) => {
    const { outputs } = await stack.up({ synchronousReplicas: "1" });
    const report = outputs.replicationReport as { replicas: { syncState: string }[] };
    assert.deepEqual(
      report.replicas.map((r) => r.syncState),
      ["quorum", "quorum"],
    );
    await queryAt(
      primary,
      "CREATE TABLE IF NOT EXISTS load_sync (id bigint PRIMARY KEY, v text NOT NULL)",
    );
    const acked: number[] = [];
    const { connectTo } = await import("../lib/stack");
    const client = await connectTo(primary);
    client.on("error", () => {});
    for (let id = 1; id <= 300; id++) {
      await client.query("INSERT INTO load_sync VALUES ($1, md5($2))", [id, String(id)]);
      acked.push(id);
    }
    dockerCli("kill", "-s", "KILL", `${c}-primary`);
    await client.end().catch(() => {});
    // Let the replicas replay what they had flushed, then read them.
    await sleep(1500);
    const present = new Set<number>();
    for (const r of replicas) {
      const missing = await missingIds(r, "load_sync", acked);
      for (const id of acked) if (!missing.includes(id)) present.add(id);
    }
    assert.deepEqual(
      acked.filter((id) => !present.has(id)),
      [],
      "acknowledged commits found on no replica",
    );
    t.diagnostic(
      `sync ANY 1: ${acked.length} acknowledged commits, all on a replica after the primary's SIGKILL`,
    );
    ensureStarted(`${c}-primary`);
    await waitUntil("primary back", () => accepting(primary), 120_000);
    const back = await stack.up({ synchronousReplicas: "0" });
    assert.deepEqual(
      (back.outputs.replicationReport as { replicas: { syncState: string }[] }).replicas.map(
        (r) => r.syncState,
      ),
      ["async", "async"],
    );
  });

  it("7. security on the default config: nothing gets in, ports are on loopback, passwords appear nowhere", async () => {
    const psql = (args: string[], password?: string) =>
      spawnSync("psql", args, {
        encoding: "utf8",
        env: { ...process.env, PGPASSWORD: password ?? "", PGCONNECT_TIMEOUT: "5" },
      });
    for (const port of [stack.basePort, stack.basePort + 1, stack.basePort + 2]) {
      const noPw = psql([
        "-w",
        "-h",
        "127.0.0.1",
        "-p",
        String(port),
        "-U",
        "postgres",
        "-d",
        "mydb",
        "-c",
        "SELECT 1",
      ]);
      assert.notEqual(noPw.status, 0);
      assert.match(noPw.stderr, /no password supplied/);
      const wrong = psql(
        ["-h", "127.0.0.1", "-p", String(port), "-U", "postgres", "-d", "mydb", "-c", "SELECT 1"],
        "wrong-pw",
      );
      assert.match(wrong.stderr, /password authentication failed for user "postgres"/);
      // TLS by default: the right password without TLS is refused too.
      const plain = psql(
        [`host=127.0.0.1 port=${port} user=postgres dbname=mydb sslmode=disable`, "-c", "SELECT 1"],
        SUPERUSER_PASSWORD,
      );
      assert.match(plain.stderr, /pg_hba.conf rejects connection .* no encryption/);
      const dir = fs.mkdtempSync("/tmp/pgc-bb-");
      const bbNoPw = spawnSync(
        "pg_basebackup",
        ["-w", "-h", "127.0.0.1", "-p", String(port), "-U", "replicator", "-D", dir],
        {
          encoding: "utf8",
          env: { ...process.env, PGPASSWORD: "" },
        },
      );
      assert.notEqual(bbNoPw.status, 0);
      // Even with the right password: published ports arrive from the gateway, which may not replicate.
      const bbPw = spawnSync(
        "pg_basebackup",
        ["-w", "-h", "127.0.0.1", "-p", String(port), "-U", "replicator", "-D", dir],
        {
          encoding: "utf8",
          env: { ...process.env, PGPASSWORD: REPLICATION_PASSWORD },
        },
      );
      assert.notEqual(bbPw.status, 0);
      assert.match(bbPw.stderr, /pg_hba.conf rejects replication connection/);
      fs.rmSync(dir, { recursive: true, force: true });
      const repl = psql(
        [
          "-h",
          "127.0.0.1",
          "-p",
          String(port),
          "-U",
          "replicator",
          "-d",
          "mydb",
          "-c",
          "SELECT * FROM wizards",
        ],
        REPLICATION_PASSWORD,
      );
      assert.match(repl.stderr, /pg_hba.conf rejects connection .* user "replicator"/);
    }
    // Inside the cluster network too, the replication role may not read tables.
    const inside = dockerCli(
      "exec",
      `${c}-replica-1`,
      "bash",
      "-c",
      `PGPASSWORD='${REPLICATION_PASSWORD}' psql -h ${c}-primary -U replicator -d mydb -c 'SELECT * FROM wizards' 2>&1 || true`,
    );
    assert.match(inside, /pg_hba.conf rejects connection/);
    const listening = spawnSync("ss", ["-ltnH"], { encoding: "utf8" }).stdout;
    for (const port of [stack.basePort, stack.basePort + 1, stack.basePort + 2]) {
      const lines = listening.split("\n").filter((l) => new RegExp(`:${port}\\s`).test(l));
      assert.ok(lines.length > 0, `port ${port} listens`);
      for (const l of lines)
        assert.match(
          l,
          new RegExp(`127\\.0\\.0\\.1:${port}\\s`),
          `port ${port} only on loopback: ${l}`,
        );
    }
    // Nowhere in state, outputs, logs or the process list.
    const secrets = [SUPERUSER_PASSWORD, REPLICATION_PASSWORD];
    const stateText = fs.readFileSync(stack.statePath, "utf8");
    const outputsShown = stack.shownOutputs();
    assert.match(outputsShown, /primaryEndpoint/);
    const logs = [`${c}-primary`, `${c}-replica-1`, `${c}-replica-2`]
      .map((n) => spawnSync("docker", ["logs", n], { encoding: "utf8" }))
      .map((r) => r.stdout + r.stderr)
      .join("\n");
    const verify = spawnSync("node", ["verify.mjs"], {
      cwd: path.join(ROOT, "assets"),
      encoding: "utf8",
      env: { ...process.env, ...stack.checkEnvironment() },
    });
    assert.equal(verify.status, 0, verify.stderr);
    const ps = spawnSync("ps", ["-eo", "args"], { encoding: "utf8" }).stdout;
    for (const [what, text] of [
      ["state file", stateText],
      ["stack outputs", outputsShown],
      ["engine log of the last up", stack.lastLog()],
      ["container logs", logs],
      ["post-step output", verify.stdout + verify.stderr],
      ["process list", ps],
    ] as const) {
      for (const s of secrets) assert.ok(!text.includes(s), `a password appears in the ${what}`);
    }
    assert.ok(logs.includes("database system is ready to accept"), "the logs were read");
  });

  // Last in this block: it moves the primary to replica-1.
  it("9. SIGKILL of the old primary while a switchover stops it: the next up converges, one primary, no acknowledged id lost", async (t) => {
    await queryAt(primary, "CREATE TABLE sw_kill (id int PRIMARY KEY)");
    const writer = new AckWriter({
      endpoints: nodes,
      password: SUPERUSER_PASSWORD,
      table: "sw_kill",
    });
    writer.start();
    // A failed assertion must not leave the writer running (the test process would never end).
    t.after(() => writer.stop());
    await sleep(500);
    const target = `${c}-replica-1`;
    const first = stack.up({ primary: target }).then(
      () => "completed",
      (err: Error) => `failed: ${err.message.split("\n").find((l) => /ERROR|error/.test(l)) ?? ""}`,
    );
    // The demotion has begun once the old primary holds (conf/hold in its volume): watched from
    // inside the container, every 10 ms, and killed at once.
    // (Asynchronously: the writer and the up run in this process.)
    const watched = await new Promise<number | null>((resolve) => {
      const loop = `for i in $(seq 18000); do [ -e ${HOLD} ] && exit 0; sleep 0.01; done; exit 1`;
      spawn("docker", ["exec", `${c}-primary`, "bash", "-c", loop]).on("close", resolve);
    });
    assert.equal(watched, 0, "the old primary's demotion began");
    dockerCli("kill", "-s", "KILL", `${c}-primary`);
    const firstResult = await first;
    await sleep(500);
    ensureStarted(`${c}-primary`);
    const { outputs } = await stack.up({ primary: target });
    await sleep(300);
    await writer.stop();
    const roles = await Promise.all(
      nodes.map(async (n) => {
        const [r] = await queryAt<{ standby: boolean }>(n, "SELECT pg_is_in_recovery() AS standby");
        return r.standby;
      }),
    );
    assert.deepEqual(roles, [true, false, true], "replica-1 is the one primary");
    assert.equal((outputs.replicationReport as { primary: { name: string } }).primary.name, target);
    for (const n of nodes) {
      assert.deepEqual(
        await missingIds(n, "sw_kill", writer.acked),
        [],
        `acknowledged ids on ${n}`,
      );
    }
    t.diagnostic(
      `first up ${firstResult}; the next up converged; ${writer.acked.length} acknowledged ids on every node, longest write gap ${writer.longestGapMs()} ms`,
    );
  });
});
