/**
 * The roll gates (assets/roll.mjs) with the real entrypoint and ctl.sh on real PostgreSQL servers
 * on loopback: a gate waits for the node before it to catch up; a gate before a container that
 * will not change does nothing; before the primary's replacement it hands the role to a standby,
 * and the topology step then makes the old primary a standby and moves the role back; a password
 * changed in config reaches the running primary before anything is replaced.
 */
import * as assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { after, before, describe, it } from "node:test";
import pg from "pg";
import { AckWriter } from "../lib/writer";
import {
  LocalCluster,
  LocalNode,
  REPLICATION_PASSWORD,
  SUPERUSER_PASSWORD,
  suiteCluster,
} from "./localCluster";

const OLD = { image: "pg:15-a", env: ["PGC_NODE_NAME=x", "PGC_SPEC=1111", "PATH=/usr/bin"] };
const NEW = { image: "pg:15-b", env: ["PGC_NODE_NAME=x", "PGC_SPEC=1111"] };

async function roles(cluster: LocalCluster): Promise<string[]> {
  return Promise.all(
    cluster.nodes.map(async (n) => {
      const [r] = await n.query<{ standby: boolean }>("SELECT pg_is_in_recovery() AS standby");
      return `${n.name}:${r.standby ? "standby" : "primary"}`;
    }),
  );
}

/** Whether `node` accepts the superuser with `password`. */
async function accepts(node: LocalNode, password: string): Promise<boolean> {
  const c = new pg.Client({
    host: "127.0.0.1",
    port: node.port,
    user: "postgres",
    password,
    database: "mydb",
  });
  try {
    await c.connect();
    return true;
  } catch {
    return false;
  } finally {
    await c.end().catch(() => {});
  }
}

describe("roll gates on real servers", { timeout: 600_000 }, () => {
  const cluster = suiteCluster(2);

  it("does nothing before a container that stays, or that does not exist yet", async () => {
    const same = await cluster.roll(cluster.replicas[0], undefined, OLD, {
      image: OLD.image,
      env: ["PGC_SPEC=1111", "PGC_NODE_NAME=x"],
    });
    assert.equal(same.status, 0, same.stderr);
    assert.deepEqual(same.result, { node: "replica-1", replaced: false, actions: [] });
    const none = await cluster.roll(cluster.replicas[0], undefined, null, NEW);
    assert.equal(none.status, 0, none.stderr);
    assert.equal(none.result?.replaced, false);
  });

  it("sees a new image or a changed PGC_ variable as a replacement; a standby's is prepared without a switchover", async () => {
    for (const spec of [NEW, { image: OLD.image, env: ["PGC_NODE_NAME=x", "PGC_SPEC=2222"] }]) {
      const r = await cluster.roll(cluster.replicas[1], undefined, OLD, spec);
      assert.equal(r.status, 0, r.stderr);
      assert.equal(r.result?.replaced, true, JSON.stringify(spec));
      assert.match(r.result?.actions.join("\n") ?? "", /replica-2 left the read-only backend/);
    }
    assert.deepEqual(await roles(cluster), [
      "primary:primary",
      "replica-1:standby",
      "replica-2:standby",
    ]);
  });

  it("drains a standby: idle sessions end at once, a query in flight finishes, then maintenance", async () => {
    const node = cluster.replicas[0];
    // A stand-in for the router's runtime API: records each command; no session left on it.
    const log = path.join(cluster.dir, "router-commands.log");
    const router = [
      "bash",
      "-c",
      'printf "%s\\n" "$1" >>"$ROUTER_LOG"; [ "$1" != "show stat" ] || echo "standbys,$NODE,0,0,0"',
      "_",
    ];
    const client = () => node.client();
    const idle = client();
    await idle.connect();
    await idle.query("SELECT 1");
    let idleError = "";
    idle.on("error", (e) => (idleError = e.message));
    const busy = client();
    await busy.connect();
    // Its query finishes; then the roll stops the node, which ends this session too (a client
    // with no error listener would throw that at the test as an uncaught exception).
    busy.on("error", () => {});
    await new Promise((r) => setTimeout(r, 700)); // idle for longer than the half second
    // Long enough to be in flight when the gate drains the node even on a loaded machine (at
    // 1.5 s, CI once saw it finish first and the gate end it as a second idle session).
    const inFlight = busy.query("SELECT pg_sleep(5) AS slept");
    await new Promise((r) => setTimeout(r, 200));
    try {
      const r = await cluster.roll(node, undefined, OLD, NEW, {
        PGC_ROUTER_ARGV: JSON.stringify(router),
        ROUTER_LOG: log,
        NODE: node.name,
      });
      assert.equal(r.status, 0, r.stderr);
      assert.match(r.stderr, new RegExp(`${node.name}: ended 1 idle session\\(s\\) as it drains`));
      assert.deepEqual((await inFlight).rows, [{ slept: "" }], "the query in flight finished");
      await assert.rejects(idle.query("SELECT 1"), "the idle session was ended");
      assert.match(idleError, /terminat/, "the idle client saw its session end");
      const commands = fs.readFileSync(log, "utf8").split("\n");
      const drain = commands.indexOf(`set server standbys/${node.name} state drain`);
      const maint = commands.indexOf(`set server standbys/${node.name} state maint`);
      assert.ok(drain >= 0 && maint > drain, `drain, then maintenance: ${commands.join("; ")}`);
      assert.ok(!commands.some((c) => c.startsWith("shutdown sessions")), "nothing left to end");
    } finally {
      await Promise.all([idle.end().catch(() => {}), busy.end().catch(() => {})]);
    }
  });

  it("waits until the node before it has replayed what the primary had written", async () => {
    const lagging = cluster.replicas[0];
    await lagging.query("SELECT pg_wal_replay_pause()");
    await cluster.primary.query("INSERT INTO acked SELECT g FROM generate_series(1, 1000) g");
    let done = false;
    const gate = cluster.roll(cluster.replicas[1], lagging, OLD, OLD).then((r) => {
      done = true;
      return r;
    });
    await new Promise((r) => setTimeout(r, 1500));
    assert.equal(done, false, "the gate waits while replica-1's replay is paused");
    await lagging.query("SELECT pg_wal_replay_resume()");
    const r = await gate;
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.result?.actions.join("\n") ?? "", /replica-1 streams from primary and replayed/);
    const [{ n }] = await lagging.query<{ n: string }>("SELECT count(*) AS n FROM acked");
    assert.equal(Number(n), 1000);
  });

  it("before the primary's replacement: a switchover to a standby; then the topology step makes it a standby and moves the role back, losing no acknowledged write", async () => {
    const writer = new AckWriter({
      endpoints: cluster.nodes.map((n) => `127.0.0.1:${n.port}`),
      password: SUPERUSER_PASSWORD,
      table: "acked",
      firstId: 100_000,
    });
    writer.start();
    try {
      await new Promise((r) => setTimeout(r, 300));
      const gate = await cluster.roll(cluster.primary, cluster.replicas[1], OLD, NEW);
      assert.equal(gate.status, 0, gate.stderr);
      assert.equal(gate.result?.replaced, true);
      assert.match(
        gate.result?.actions.join("\n") ?? "",
        /primary is the primary and its container will be replaced: switchover first/,
      );
      // The old primary is stopped and held (its container would now be replaced).
      assert.equal(await accepts(cluster.primary, SUPERUSER_PASSWORD), false);
      const writable = [];
      for (const n of cluster.replicas) {
        const [r] = await n.query<{ standby: boolean }>("SELECT pg_is_in_recovery() AS standby");
        if (!r.standby) writable.push(n.name);
      }
      assert.equal(writable.length, 1, `one replica took over: ${writable}`);

      const back = await cluster.topology(cluster.primary);
      assert.equal(back.status, 0, back.stderr);
      assert.match(back.result?.actions.join("\n") ?? "", /primary rejoins as a standby/);
      assert.match(back.result?.actions.join("\n") ?? "", /switchover .* -> primary/);
    } finally {
      await writer.stop();
    }
    assert.deepEqual(await roles(cluster), [
      "primary:primary",
      "replica-1:standby",
      "replica-2:standby",
    ]);
    process.stderr.write(
      `roll of the primary: ${writer.acked.length} acknowledged, longest write gap ${writer.longestGapMs()} ms\n`,
    );
    for (const n of cluster.nodes) {
      const rows = await n.query<{ id: number }>("SELECT id FROM acked WHERE id >= 100000");
      const have = new Set(rows.map((r) => r.id));
      assert.deepEqual(
        writer.acked.filter((id) => !have.has(id)),
        [],
        `every acknowledged id on ${n.name}`,
      );
    }
  });

  it("a changed password: the first gate sets it on the running primary, over its local socket", async () => {
    const su = "new-Su-pw-'rolled:1";
    const repl = "new-Repl-pw-rolled-2";
    const change = (s: string, r: string) =>
      cluster.roll(cluster.replicas[0], undefined, OLD, OLD, {
        PGC_SUPERUSER_PASSWORD: s,
        PGC_REPLICATION_PASSWORD: r,
      });
    const r = await change(su, repl);
    assert.equal(r.status, 0, r.stderr);
    assert.match(
      r.result?.actions.join("\n") ?? "",
      /primary: the superuser's and the replication role's passwords changed/,
    );
    assert.doesNotMatch(r.stderr, new RegExp(su.replace(/[^\w-]/g, ".")), "no password in the log");
    for (const n of cluster.nodes) {
      assert.equal(await accepts(n, su), true, `${n.name} takes the new password`);
      assert.equal(await accepts(n, SUPERUSER_PASSWORD), false, `${n.name} refuses the old one`);
    }
    // The replication role's too: a replication connection with the new one is accepted.
    const walsender = new pg.Client({
      host: "127.0.0.1",
      port: cluster.primary.port,
      user: "replicator",
      password: repl,
      database: "mydb",
      replication: "true",
    } as pg.ClientConfig);
    await walsender.connect();
    await walsender.end();
    // And back, for whoever runs next.
    const back = await change(SUPERUSER_PASSWORD, REPLICATION_PASSWORD);
    assert.equal(back.status, 0, back.stderr);
    assert.equal(await accepts(cluster.primary, SUPERUSER_PASSWORD), true);
  });
});

describe("a roll gate with 0 replicas", { timeout: 300_000 }, () => {
  const cluster = new LocalCluster({ replicas: 0 });
  before(() => cluster.start());
  after(() => cluster.destroy());

  it("has no one to hand the role to: the replacement restarts the only node, which keeps running until then", async () => {
    const r = await cluster.roll(cluster.primary, undefined, OLD, NEW);
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(r.result?.actions, ["primary is the only node: its replacement restarts it"]);
    assert.equal(await accepts(cluster.primary, SUPERUSER_PASSWORD), true);
  });
});
