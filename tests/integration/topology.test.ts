/**
 * The topology step (assets/topology.mjs) with the real entrypoint and ctl.sh on real PostgreSQL
 * servers on loopback: bootstrap, planned switchover there and back under a writer, a refused
 * switchover, a re-run that converges, and recovery from a lost primary.
 */
import * as assert from "node:assert/strict";
import { spawn } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { describe, it } from "node:test";
import { AckWriter } from "../lib/writer";
import { LocalCluster, LocalNode, SUPERUSER_PASSWORD, suiteCluster } from "./localCluster";

/** Runs a verb of a node's ctl.sh as the topology step would. */
function ctl(node: LocalNode, verb: string): Promise<{ status: number | null; stderr: string }> {
  const { argv, env } = node.ctlCommand();
  return new Promise((resolve) => {
    const child = spawn(argv[0], [...argv.slice(1), verb], {
      env: { ...process.env, ...env },
      stdio: ["ignore", "ignore", "pipe"],
    });
    let stderr = "";
    child.stderr.on("data", (d) => (stderr += d));
    child.on("close", (status) => resolve({ status, stderr }));
  });
}

async function roles(cluster: LocalCluster): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const n of cluster.nodes) {
    const [r] = await n.query<{ standby: boolean }>("SELECT pg_is_in_recovery() AS standby");
    out[n.name] = r.standby ? "standby" : "primary";
  }
  return out;
}

async function missingIds(node: LocalNode, acked: number[]): Promise<number[]> {
  for (let i = 0; ; i++) {
    const rows = await node.query<{ id: number }>("SELECT id FROM acked");
    const have = new Set(rows.map((r) => r.id));
    const missing = acked.filter((id) => !have.has(id));
    if (missing.length === 0 || i > 50) return missing;
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe("the topology step on real servers", { timeout: 600_000 }, () => {
  const cluster = suiteCluster(2);

  it("bootstraps: node 0 ran initdb, the others cloned from it and stream", async () => {
    // Created by a normal server, not in initdb's single-user session: an OID there is below
    // FirstNormalObjectId (16384), and pgAdmin hides such a database as a system one.
    const [db] = await cluster.primary.query<{ oid: number }>(
      "SELECT oid::int AS oid FROM pg_database WHERE datname = current_database()",
    );
    assert.ok(db.oid >= 16384, `the cluster's database has a user OID (${db.oid})`);
    assert.deepEqual(await roles(cluster), {
      primary: "primary",
      "replica-1": "standby",
      "replica-2": "standby",
    });
    const report = cluster.verify();
    assert.equal(report.status, 0, report.stderr);
    assert.deepEqual(
      report.report?.replicas.map((r) => [r.name, r.state, r.clones]),
      [
        ["replica-1", "streaming", 1],
        ["replica-2", "streaming", 1],
      ],
    );
  });

  it("switches over to replica-1 and back under writes: no acknowledged id lost, no restart of the other standby, no re-clone", async () => {
    for (const [round, target] of [cluster.replicas[0], cluster.primary].entries()) {
      const bystander = cluster.replicas[1];
      const [started] = await bystander.query<{ t: string }>(
        "SELECT pg_postmaster_start_time()::text AS t",
      );
      const writer = new AckWriter({
        endpoints: cluster.nodes.map((n) => `127.0.0.1:${n.port}`),
        password: SUPERUSER_PASSWORD,
        table: "acked",
        firstId: 1 + round * 50_000,
      });
      writer.start();
      await new Promise((r) => setTimeout(r, 300));
      const t0 = Date.now();
      const r = await cluster.topology(target);
      const took = Date.now() - t0;
      if (process.env.PGC_DEBUG) process.stderr.write(r.stderr);
      await new Promise((res) => setTimeout(res, 300));
      await writer.stop();
      assert.equal(r.status, 0, r.stderr);
      process.stderr.write(
        `switchover to ${target.name}: step ${took} ms, longest write gap ${writer.longestGapMs()} ms, ${writer.acked.length} acknowledged\n`,
      );
      assert.equal(r.result?.primary, target.name);
      const expected = Object.fromEntries(
        cluster.nodes.map((n) => [n.name, n === target ? "primary" : "standby"]),
      );
      assert.deepEqual(await roles(cluster), expected);
      for (const n of cluster.nodes) {
        assert.deepEqual(await missingIds(n, writer.acked), [], `ids missing on ${n.name}`);
        const stale = await n.query("SELECT slot_name FROM pg_replication_slots WHERE NOT active");
        assert.deepEqual(stale, [], `no inactive slot on ${n.name}`);
      }
      const [after] = await bystander.query<{ t: string }>(
        "SELECT pg_postmaster_start_time()::text AS t",
      );
      assert.equal(after.t, started.t, "the other standby was re-pointed by a reload");
      const report = cluster.verify(
        60,
        cluster.nodes.filter((n) => n !== target).map((n) => n.address()),
        target,
      );
      assert.equal(report.status, 0, report.stderr);
      for (const rep of report.report?.replicas ?? []) {
        assert.equal(rep.state, "streaming", `${rep.name} streams from ${target.name}`);
      }
      assert.equal(cluster.replicas[0].nodeState().clones, 1, "replica-1 never re-cloned");
    }
    // A re-run with nothing to do does nothing.
    const again = await cluster.topology(cluster.primary);
    assert.equal(again.status, 0, again.stderr);
    assert.deepEqual(again.result?.actions, []);
  });

  it("refuses a switchover to a replica whose replay is paused, changing nothing", async () => {
    const candidate = cluster.replicas[1];
    await candidate.query("SELECT pg_wal_replay_pause()");
    try {
      const r = await cluster.topology(candidate);
      assert.notEqual(r.status, 0);
      assert.match(
        r.stderr,
        /switchover to replica-2 refused, nothing changed: .*WAL replay is paused/,
      );
      assert.deepEqual(await roles(cluster), {
        primary: "primary",
        "replica-1": "standby",
        "replica-2": "standby",
      });
    } finally {
      await candidate.query("SELECT pg_wal_replay_resume()");
    }
  });

  it("a switchover interrupted after the old primary stopped: a re-run goes on to the candidate, or back when that node is asked for again", async () => {
    // The state a run leaves when it dies right after `ctl.sh demote` (step 3 of the design).
    await cluster.primary.query(
      "INSERT INTO acked SELECT g FROM generate_series(300001, 300100) g",
    );
    let d = await ctl(cluster.primary, "demote");
    assert.equal(d.status, 0, d.stderr);
    const onward = await cluster.topology(cluster.replicas[0]);
    assert.equal(onward.status, 0, onward.stderr);
    assert.deepEqual(await roles(cluster), {
      primary: "standby",
      "replica-1": "primary",
      "replica-2": "standby",
    });
    for (const n of cluster.nodes) {
      const [{ c }] = await n.query<{ c: string }>(
        "SELECT count(*) AS c FROM acked WHERE id > 300000",
      );
      assert.equal(Number(c), 100, `the rows written before the stop are on ${n.name}`);
    }
    // Again, and now the node that was stopped is the one asked for.
    d = await ctl(cluster.replicas[0], "demote");
    assert.equal(d.status, 0, d.stderr);
    const back = await cluster.topology(cluster.replicas[0]);
    assert.equal(back.status, 0, back.stderr);
    assert.match(
      back.stderr,
      /replica-1 was stopped by an unfinished switchover; it is the primary again/,
    );
    assert.deepEqual(await roles(cluster), {
      primary: "standby",
      "replica-1": "primary",
      "replica-2": "standby",
    });
    // And back to node 0, so the next test starts where it expects.
    const home = await cluster.topology(cluster.primary);
    assert.equal(home.status, 0, home.stderr);
  });

  it("a pg_rewind that fails: the old primary is cloned again from the new one, swapped in when complete, and streams", async () => {
    await cluster.primary.query(
      "INSERT INTO acked SELECT g FROM generate_series(400001, 400100) g",
    );
    // pg_rewind fails on node 0 only: a stand-in that says what a real failure says, first on
    // the PATH its ctl.sh runs with.
    const fake = path.join(cluster.dir, "failing-pg-rewind");
    fs.mkdirSync(fake, { recursive: true, mode: 0o755 });
    fs.writeFileSync(
      path.join(fake, "pg_rewind"),
      "#!/bin/sh\necho 'pg_rewind: error: could not find previous WAL record (a stand-in)' >&2\nexit 1\n",
      { mode: 0o755 },
    );
    const ctlOf = (n: LocalNode) => {
      const c = n.ctlCommand();
      return n === cluster.primary ? { ...c, env: { ...c.env, PATH: `${fake}:${c.env.PATH}` } } : c;
    };
    const r = await cluster.topology(cluster.replicas[0], cluster.nodes, {
      PGC_CTL: JSON.stringify(Object.fromEntries(cluster.nodes.map((n) => [n.name, ctlOf(n)]))),
    });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /primary: pg_rewind failed \(.*\); cloning it again from \S*replica-1/);
    assert.deepEqual(await roles(cluster), {
      primary: "standby",
      "replica-1": "primary",
      "replica-2": "standby",
    });
    assert.deepEqual(cluster.primary.nodeState().lastCloneReason, "rewind failed");
    const [{ c }] = await cluster.primary.query<{ c: string }>(
      "SELECT count(*) AS c FROM acked WHERE id > 400000",
    );
    assert.equal(Number(c), 100, "the rows written before the switchover are on node 0");
    // Back to node 0 (a normal rewind), so the next test starts where it expects.
    const home = await cluster.topology(cluster.primary);
    assert.equal(home.status, 0, home.stderr);
  });

  it("a lost primary: refuses to create an empty one, then promotes the replica named and rebuilds node 0 as its standby", async () => {
    await cluster.primary.query(
      "INSERT INTO acked SELECT g FROM generate_series(100001, 101000) g",
    );
    const [{ lsn }] = await cluster.primary.query<{ lsn: string }>(
      "SELECT pg_current_wal_lsn()::text AS lsn",
    );
    for (const n of cluster.replicas) {
      for (let i = 0; i < 100; i++) {
        const [r] = await n.query<{ ok: boolean }>(
          "SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn AS ok",
          [lsn],
        );
        if (r.ok) break;
        await new Promise((res) => setTimeout(res, 50));
      }
    }
    // As `docker rm -f` and `docker volume rm` would: the node and its data are gone.
    await cluster.primary.stop();
    fs.rmSync(cluster.primary.volume, { recursive: true, force: true });
    cluster.primary.launch();

    const refused = await cluster.topology(cluster.primary);
    assert.notEqual(refused.status, 0);
    assert.match(
      refused.stderr,
      /the primary primary has an empty data volume, but replica-1 and replica-2 hold this cluster .*Nothing was changed and no database was created\. To recover, make the most advanced replica the primary: pulumi config set primary replica-\d/,
    );
    assert.ok(!fs.existsSync(`${cluster.primary.volume}/pgdata/PG_VERSION`), "no initdb happened");

    const r = await cluster.topology(cluster.replicas[0]);
    assert.equal(r.status, 0, r.stderr);
    await cluster.primary.waitReady(60_000);
    assert.deepEqual(await roles(cluster), {
      primary: "standby",
      "replica-1": "primary",
      "replica-2": "standby",
    });
    const [{ n }] = await cluster.replicas[0].query<{ n: string }>(
      "SELECT count(*) AS n FROM acked WHERE id BETWEEN 100001 AND 101000",
    );
    assert.equal(Number(n), 1000, "the rows written before the loss are served read-write");
    await cluster.replicas[0].query("INSERT INTO acked VALUES (200001)");
    assert.deepEqual(await missingIds(cluster.primary, [200001]), [], "node 0 streams again");
  });
});
