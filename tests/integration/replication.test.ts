import * as assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import * as path from "node:path";
import pg from "pg";
import { after, before, describe, it } from "node:test";
import {
  LocalCluster,
  REPLICATION_PASSWORD,
  SUPERUSER_PASSWORD,
  postgresBinDir,
  streamFrom,
  writeRows,
} from "./localCluster";

/** A replication connection attempt with psql, as a replica or pg_basebackup would make. */
function replicationConnect(host: string, port: number, password: string, user = "replicator") {
  return spawnSync(
    path.join(postgresBinDir(), "psql"),
    [
      `host=${host} port=${port} user=${user} dbname=replication replication=true connect_timeout=5`,
      "-XAtc",
      "IDENTIFY_SYSTEM",
    ],
    { env: { ...process.env, PGPASSWORD: password }, encoding: "utf8" },
  );
}

/**
 * A replication connection made with `pg` from a chosen loopback source address, standing in for
 * a host outside (or at the edge of) the cluster's network.
 */
async function replicationFrom(source: string, port: number, password: string): Promise<string> {
  const client = new pg.Client({
    host: "127.0.0.1",
    port,
    user: "replicator",
    password,
    database: "replication",
    replication: "true",
    stream: streamFrom(source),
  } as pg.ClientConfig);
  try {
    await client.connect();
    const res = await client.query("IDENTIFY_SYSTEM");
    return `connected: ${JSON.stringify(res.rows[0])}`;
  } catch (err) {
    return `refused: ${(err as Error).message}`;
  } finally {
    await client.end().catch(() => {});
  }
}

describe("assets against real PostgreSQL on loopback", { timeout: 600_000 }, () => {
  const cluster = new LocalCluster({ replicas: 2 });
  before(async () => {
    await cluster.start();
  });
  after(async () => {
    await cluster.destroy();
  });

  it("streams to both replicas, each through its own slot", async () => {
    const report = cluster.verify();
    assert.equal(report.status, 0, report.stderr);
    const slots = await cluster.primary.query<{
      slot_name: string;
      active: boolean;
      slot_type: string;
    }>("SELECT slot_name, active, slot_type FROM pg_replication_slots ORDER BY slot_name");
    assert.deepEqual(slots, [
      { slot_name: "replica_1", active: true, slot_type: "physical" },
      { slot_name: "replica_2", active: true, slot_type: "physical" },
    ]);
    const senders = await cluster.primary.query<{ application_name: string; state: string }>(
      "SELECT application_name, state FROM pg_stat_replication WHERE application_name NOT LIKE '%-control' ORDER BY application_name",
    );
    assert.deepEqual(senders, [
      { application_name: "replica-1", state: "streaming" },
      { application_name: "replica-2", state: "streaming" },
    ]);
    for (const r of cluster.replicas) {
      const [row] = await r.query<{ standby: boolean }>("SELECT pg_is_in_recovery() AS standby");
      assert.equal(row.standby, true);
    }
  });

  it("seeds Wizards once and reports every replica caught up; a re-run duplicates nothing", async () => {
    const first = cluster.verify();
    assert.equal(first.status, 0, first.stderr);
    const second = cluster.verify();
    assert.equal(second.status, 0, second.stderr);
    assert.equal(second.report?.seededRows, 0);
    const wizards = await cluster.primary.query<{ n: string }>("SELECT count(*) AS n FROM wizards");
    assert.equal(Number(wizards[0].n), 3);
    assert.deepEqual(
      second.report?.replicas.map((r) => [
        r.name,
        r.caughtUp,
        r.state,
        r.slot,
        r.slotActive,
        r.wizards,
      ]),
      [
        ["replica-1", true, "streaming", "replica_1", true, 3],
        ["replica-2", true, "streaming", "replica_2", true, 3],
      ],
    );
    for (const r of cluster.replicas) {
      const rows = await r.query<{ firstname: string }>(
        "SELECT firstname FROM wizards ORDER BY id",
      );
      assert.deepEqual(
        rows.map((x) => x.firstname),
        ["Harry", "Ron", "Hermione"],
      );
    }
  });

  it("refuses a replication connection with a wrong password", () => {
    const ok = replicationConnect("127.0.0.1", cluster.primary.port, REPLICATION_PASSWORD);
    assert.equal(ok.status, 0, ok.stderr);
    const bad = replicationConnect("127.0.0.1", cluster.primary.port, "wrong-password");
    assert.notEqual(bad.status, 0);
    assert.match(bad.stderr, /password authentication failed for user "replicator"/);
  });

  it("refuses replication from outside the cluster subnet and from its gateway", async () => {
    // The test cluster's "network" is 127.0.0.0/30; 127.0.0.3 stands for the Docker gateway
    // (where connections through published ports come from) and 127.0.0.5 for any outside host.
    const inside = await replicationFrom("127.0.0.2", cluster.primary.port, REPLICATION_PASSWORD);
    assert.match(inside, /^connected: /);
    const outside = await replicationFrom("127.0.0.5", cluster.primary.port, REPLICATION_PASSWORD);
    assert.match(
      outside,
      /^refused: pg_hba.conf rejects replication connection for host "127.0.0.5"/,
    );
    const gateway = await replicationFrom("127.0.0.3", cluster.primary.port, REPLICATION_PASSWORD);
    assert.match(
      gateway,
      /^refused: pg_hba.conf rejects replication connection for host "127.0.0.3"/,
    );
    // The superuser cannot replicate either, even from inside the subnet.
    const superuser = replicationConnect(
      "127.0.0.1",
      cluster.primary.port,
      SUPERUSER_PASSWORD,
      "postgres",
    );
    assert.notEqual(superuser.status, 0);
    assert.match(superuser.stderr, /rejects replication connection/);
  });

  it("does not let the replication role open sessions or read tables", async () => {
    const c = cluster.primary.client("127.0.0.1", "replicator", REPLICATION_PASSWORD);
    await assert.rejects(
      c.connect(),
      /pg_hba.conf rejects connection for host "127.0.0.1", user "replicator"/,
    );
    const roles = await cluster.primary.query<{ rolsuper: boolean; rolreplication: boolean }>(
      "SELECT rolsuper, rolreplication FROM pg_roles WHERE rolname = 'replicator'",
    );
    assert.deepEqual(roles, [{ rolsuper: false, rolreplication: true }]);
  });

  it("keeps passwords out of the process list", () => {
    const ps = execFileSync("ps", ["-eo", "args"], { encoding: "utf8" });
    assert.ok(
      ps.includes(`-D ${cluster.primary.volume}/pgdata`),
      "the cluster's servers are in the process list",
    );
    assert.ok(!ps.includes(SUPERUSER_PASSWORD) && !ps.includes(REPLICATION_PASSWORD));
  });

  it("a stopped replica catches up after the primary wrote several times wal_keep_size, with no row missing and no re-clone", async () => {
    const replica = cluster.replicas[0];
    await replica.stop();
    // ~450 MB of WAL: more than three times wal_keep_size (128MB); the slot retains it.
    const rows = await writeRows(cluster.primary, "load_a", 300_000);
    await replica.start();
    const report = cluster.verify(120);
    assert.equal(report.status, 0, report.stderr);
    const [{ n }] = await replica.query<{ n: string }>("SELECT count(*) AS n FROM load_a");
    assert.equal(Number(n), rows);
    assert.equal(replica.nodeState().clones, 1, "a populated volume is never re-cloned");
    assert.match(replica.log(), /starting PostgreSQL \(standby: standby.signal is present\)/);
  });

  it("reattaches replicas after the primary restarts", async () => {
    await cluster.primary.stop();
    await cluster.primary.start();
    const report = cluster.verify(60);
    assert.equal(report.status, 0, report.stderr);
    assert.deepEqual(
      report.report?.replicas.map((r) => r.state),
      ["streaming", "streaming"],
    );
    assert.match(cluster.primary.log(), /starting PostgreSQL \(primary: no standby.signal\)/);
  });

  it("the primary restarts while synchronous replication is on and no standby can connect", async () => {
    await cluster.primary.query(`ALTER SYSTEM SET synchronous_standby_names = 'ANY 1 ("nobody")'`);
    await cluster.primary.stop();
    // Its start-up role setup commits in single-user mode; it must not wait for a standby.
    await cluster.primary.start(30_000);
    await cluster.primary.query("ALTER SYSTEM RESET synchronous_standby_names");
    await cluster.primary.query("SELECT pg_reload_conf()");
  });

  it("a populated replica restarts and serves reads while the primary is down", async () => {
    const replica = cluster.replicas[0];
    await cluster.primary.stop();
    await replica.stop();
    await replica.start(30_000);
    const rows = await replica.query<{ n: string }>("SELECT count(*) AS n FROM wizards");
    assert.equal(Number(rows[0].n), 3);
    await cluster.primary.start();
    const report = cluster.verify(60);
    assert.equal(report.status, 0, report.stderr);
    assert.equal(replica.nodeState().clones, 1);
  });

  it("drops a removed replica's slot", async () => {
    const removed = cluster.replicas.pop();
    assert.ok(removed);
    await removed.stop();
    const dropped = cluster.dropSlot(removed.slot);
    assert.equal(dropped.status, 0, dropped.stderr);
    const slots = await cluster.primary.query<{ slot_name: string }>(
      "SELECT slot_name FROM pg_replication_slots",
    );
    assert.deepEqual(
      slots.map((s) => s.slot_name),
      ["replica_1"],
    );
    // Dropping again is a no-op, not an error (a retried delete).
    const again = cluster.dropSlot(removed.slot);
    assert.equal(again.status, 0, again.stderr);
    const report = cluster.verify();
    assert.equal(report.status, 0, report.stderr);
  });
});

describe("a replica that fell behind max_slot_wal_keep_size", { timeout: 600_000 }, () => {
  const cluster = new LocalCluster({ replicas: 1, maxSlotWalKeepSize: "64MB" });
  before(async () => {
    await cluster.start();
  });
  after(async () => {
    await cluster.destroy();
  });

  it("re-clones itself when the primary invalidated its slot, and the report says so", async () => {
    assert.equal(cluster.verify().status, 0);
    const replica = cluster.replicas[0];
    await replica.stop();
    const rows = await writeRows(cluster.primary, "load_b", 200_000);
    await cluster.primary.query("CHECKPOINT");
    const [slot] = await cluster.primary.query<{ wal_status: string }>(
      "SELECT wal_status FROM pg_replication_slots WHERE slot_name = $1",
      [replica.slot],
    );
    assert.equal(slot.wal_status, "lost", "the slot was invalidated");
    await replica.start(180_000);
    const report = cluster.verify(120);
    assert.equal(report.status, 0, report.stderr);
    assert.equal(report.report?.replicas[0].clones, 2);
    assert.equal(report.report?.replicas[0].lastCloneReason, "slot lost");
    assert.equal(report.report?.replicas[0].slotWalStatus, "reserved");
    const [{ n }] = await replica.query<{ n: string }>("SELECT count(*) AS n FROM load_b");
    assert.equal(Number(n), rows);
  });
});

describe("slow clones and missing nodes", { timeout: 600_000 }, () => {
  const cluster = new LocalCluster({ replicas: 1 });
  after(async () => {
    await cluster.destroy();
  });

  it("the topology step waits out a clone longer than the post-step's timeout, and the post-step fails fast on a replica that never comes", async () => {
    const replica = cluster.replicas[0];
    cluster.primary.launch();
    replica.launch();
    // Bootstrap the primary alone first, then give it data to clone.
    const boot = await cluster.topology(cluster.primary, [cluster.primary]);
    assert.equal(boot.status, 0, boot.stderr);
    await cluster.primary.waitReady();
    await writeRows(cluster.primary, "bulk", 40_000);
    // About 40 MB at 8 MB/s: the clone takes several seconds, longer than the 2 s the post-step
    // below allows a node without progress. The topology step clones synchronously, so it waits.
    replica.extraEnv.PGC_CLONE_MAX_RATE = "8M";
    const t0 = Date.now();
    const topo = await cluster.topology();
    assert.equal(topo.status, 0, topo.stderr);
    assert.ok(Date.now() - t0 > 2_000, `the clone took ${Date.now() - t0} ms`);
    const slow = cluster.verify(2);
    assert.equal(slow.status, 0, slow.stderr);
    assert.equal(slow.report?.replicas[0].caughtUp, true);

    const t1 = Date.now();
    const ghost = {
      name: "replica-9",
      host: "127.0.0.1",
      port: cluster.basePort + 9,
      slot: "replica_9",
    };
    const missing = cluster.verify(2, [replica.address(), ghost]);
    assert.notEqual(missing.status, 0);
    assert.match(
      missing.stderr,
      /replica replica-9: 2 s without progress; cannot connect to replica-9 at 127\.0\.0\.1:\d+: .*docker logs replica-9/,
    );
    assert.ok(Date.now() - t1 < 15_000, `failed within the bound (${Date.now() - t1} ms)`);
  });
});
