/**
 * The one entrypoint (assets/entrypoint.sh) and its control verbs (assets/ctl.sh) against real
 * PostgreSQL on loopback: three nodes with the same environment and no role, made a primary and
 * two standbys by ctl verbs, then moved through a switchover by ctl verbs and SQL as the topology
 * step will (docs/design/primary-as-role.md, sections B–D).
 */
import * as assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { after, describe, it } from "node:test";
import pg from "pg";
import { REPLICATION_PASSWORD, SUPERUSER_PASSWORD, streamFrom } from "./localCluster";
import { EntrypointNode, LocalNodes } from "./localNode2";
import { AckWriter } from "../lib/writer";
import { sql, waitFor, walReceiver, writeTimeline } from "./switchoverSteps";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Waits until `standby`'s WAL receiver streams from `upstream` (on `timeline`, if given). */
async function streamingFrom(standby: EntrypointNode, upstream: EntrypointNode, timeline?: number) {
  return waitFor(`${standby.name} to stream from ${upstream.name}`, 20_000, async () => {
    const r = await walReceiver(standby);
    return r?.status === "streaming" &&
      r.senderPort === upstream.port &&
      (timeline === undefined || r.receivedTli === timeline)
      ? r
      : undefined;
  });
}

/** Waits until `node` has replayed `lsn` (or, with `past`, beyond it). */
async function replayed(node: EntrypointNode, lsn: string, past = false) {
  const op = past ? ">" : ">=";
  await waitFor(`${node.name} to replay ${past ? "past " : ""}${lsn}`, 20_000, async () => {
    const [r] = await sql<{ done: boolean }>(
      node,
      `SELECT pg_last_wal_replay_lsn() ${op} $1::pg_lsn AS done`,
      [lsn],
    );
    return r.done ? true : undefined;
  });
}

/** A session as `user` to `database` from a chosen loopback source address. */
async function sessionFrom(
  source: string,
  node: EntrypointNode,
  user: string,
  password: string,
  database: string,
): Promise<string> {
  const client = new pg.Client({
    host: "127.0.0.1",
    port: node.port,
    user,
    password,
    database,
    stream: streamFrom(source),
  } as pg.ClientConfig);
  try {
    await client.connect();
    // What pg_rewind does with the four grants: read a file of the data directory.
    const res = await client.query("SELECT length(pg_read_binary_file('PG_VERSION')) AS n");
    return `read ${res.rows[0].n} bytes`;
  } catch (err) {
    return `refused: ${(err as Error).message}`;
  } finally {
    await client.end().catch(() => {});
  }
}

describe("one entrypoint for every node, roles set by ctl.sh", { timeout: 240_000 }, () => {
  // 64MB so the slot-watch test can make the upstream invalidate a standby's slot cheaply.
  const nodes = new LocalNodes(["node-a", "node-b", "node-c"], { maxSlotWalKeepSize: "64MB" });
  const [a, b, c] = nodes.nodes;
  const writer = new AckWriter({
    endpoints: [a, b].map((n) => `127.0.0.1:${n.port}`),
    password: SUPERUSER_PASSWORD,
    table: "acks",
  });

  after(async () => {
    await writer.stop().catch(() => {});
    await nodes.destroy();
  });

  it("an empty volume waits for the topology step: no initdb, no clone", async () => {
    for (const n of nodes.nodes) n.launch();
    await waitFor("node-a to wait", 10_000, async () =>
      /empty volume: waiting for the topology step/.test(a.log()) ? true : undefined,
    );
    await sleep(500);
    assert.ok(a.alive(), "the entrypoint keeps running");
    assert.equal(fs.existsSync(path.join(a.pgdata, "PG_VERSION")), false, "no initdb");
    assert.equal(a.postmasterPid(), null, "no server");
    assert.deepEqual(await a.ctlOk("status"), {
      node: "node-a",
      volume: "empty",
      systemIdentifier: null,
      state: null,
      checkpointLsn: null,
      timeline: null,
      standby: false,
      hold: false,
      running: false,
      tls: false,
    });
    const bad = await a.ctl("bootstrap");
    assert.notEqual(bad.code, 0);
    assert.equal(bad.stdout, "");
    assert.match(
      bad.stderr,
      /usage: ctl\.sh status \| bootstrap-initdb \| bootstrap-restore STANZA \[TIME \| LSN SET\] \| bootstrap-clone HOST PORT/,
    );
  });

  it("bootstrap-initdb makes a primary, bootstrap-clone two standbys streaming through their slots", async (t) => {
    const t0 = Date.now();
    const primary = await a.ctlOk("bootstrap-initdb");
    const tInit = Date.now();
    assert.equal(primary.volume, "populated");
    assert.equal(primary.state, "in production");
    assert.deepEqual(
      [primary.timeline, primary.standby, primary.hold, primary.running],
      [1, false, false, true],
    );
    assert.match(primary.systemIdentifier ?? "", /^\d{15,}$/);

    const again = await a.ctl("bootstrap-initdb");
    assert.notEqual(again.code, 0);
    assert.equal(again.stdout, "", "no result line on failure");
    assert.match(again.stderr, /refusing: the volume already holds a cluster/);

    const t1 = Date.now();
    const standbys = await Promise.all(
      [b, c].map((n) => n.ctlOk("bootstrap-clone", "127.0.0.1", String(a.port))),
    );
    const tClone = Date.now();
    for (const s of standbys) {
      assert.equal(s.systemIdentifier, primary.systemIdentifier);
      assert.deepEqual([s.standby, s.hold, s.running], [true, false, true]);
    }
    for (const n of [b, c]) {
      await streamingFrom(n, a);
      assert.deepEqual(
        [n.nodeState().node, n.nodeState().clones, n.nodeState().lastCloneReason],
        [n.name, 1, "initial clone"],
      );
    }
    const slots = await sql<{ slot_name: string; active: boolean }>(
      a,
      "SELECT slot_name, active FROM pg_replication_slots ORDER BY 1",
    );
    assert.deepEqual(slots, [
      { slot_name: "node_b", active: true },
      { slot_name: "node_c", active: true },
    ]);
    // Not the standbys' short control connections (<node>-control: the slot watch's
    // READ_REPLICATION_SLOT), which a loaded machine catches here now and then.
    const senders = await sql<{ application_name: string; state: string }>(
      a,
      "SELECT application_name, state FROM pg_stat_replication WHERE application_name NOT LIKE '%-control' ORDER BY 1",
    );
    assert.deepEqual(senders, [
      { application_name: "node-b", state: "streaming" },
      { application_name: "node-c", state: "streaming" },
    ]);

    await sql(a, "CREATE TABLE wizards (id serial PRIMARY KEY, firstname text, lastname text)");
    await sql(
      a,
      "INSERT INTO wizards (firstname, lastname) VALUES ('Harry', 'Potter'), ('Ron', 'Weasley'), ('Hermione', 'Granger')",
    );
    const [{ lsn }] = await sql<{ lsn: string }>(a, "SELECT pg_current_wal_lsn()::text AS lsn");
    for (const n of [b, c]) {
      await replayed(n, lsn);
      const rows = await sql<{ firstname: string }>(n, "SELECT firstname FROM wizards ORDER BY id");
      assert.deepEqual(
        rows.map((r) => r.firstname),
        ["Harry", "Ron", "Hermione"],
      );
    }
    t.diagnostic(
      `bootstrap-initdb ${tInit - t0} ms (until it accepts connections); two parallel bootstrap-clones ${tClone - t1} ms`,
    );
  });

  it("hba: the replication role opens a session only to database postgres, only from the cluster's network and its other hosts", async () => {
    // 127.0.0.0/30 is the cluster's network, 127.0.0.3 its gateway (published ports), .6 another
    // Docker host of the cluster (PGC_REPLICATION_PEERS), .5 outside.
    const inside = await sessionFrom(
      "127.0.0.2",
      a,
      "replicator",
      REPLICATION_PASSWORD,
      "postgres",
    );
    assert.equal(inside, "read 3 bytes", "pg_rewind's grants work in database postgres");
    const gateway = await sessionFrom(
      "127.0.0.3",
      a,
      "replicator",
      REPLICATION_PASSWORD,
      "postgres",
    );
    assert.match(gateway, /^refused: pg_hba.conf rejects connection for host "127.0.0.3"/);
    const outside = await sessionFrom(
      "127.0.0.5",
      a,
      "replicator",
      REPLICATION_PASSWORD,
      "postgres",
    );
    assert.match(outside, /^refused: pg_hba.conf rejects connection for host "127.0.0.5"/);
    const peer = await sessionFrom("127.0.0.6", a, "replicator", REPLICATION_PASSWORD, "postgres");
    assert.equal(peer, "read 3 bytes", "another host of the cluster may run pg_rewind");
    const peerHealth = await sessionFrom("127.0.0.6", a, "pgc_health", "wrong", "postgres");
    assert.match(peerHealth, /password authentication failed for user "pgc_health"/);
    const outsideHealth = await sessionFrom("127.0.0.5", a, "pgc_health", "wrong", "postgres");
    assert.match(outsideHealth, /^refused: pg_hba.conf rejects connection for host "127.0.0.5"/);
    const otherDb = await sessionFrom("127.0.0.2", a, "replicator", REPLICATION_PASSWORD, "mydb");
    assert.match(otherDb, /^refused: pg_hba.conf rejects connection .*database "mydb"/);
    // The superuser still reaches database postgres through the gateway.
    const su = await sessionFrom("127.0.0.3", a, "postgres", SUPERUSER_PASSWORD, "postgres");
    assert.equal(su, "read 3 bytes");
  });

  it("a restarted standby keeps standby.signal and its upstream and streams again; a server that exits on its own ends the entrypoint", async () => {
    assert.equal(await b.stop("SIGTERM"), 0, "a stop exits 0");
    assert.ok(fs.existsSync(path.join(b.pgdata, "standby.signal")));
    assert.match(b.autoConf(), new RegExp(`^primary_conninfo = '.*port=${a.port} .*'$`, "m"));
    assert.match(b.autoConf(), /^primary_slot_name = 'node_b'$/m);
    const nodeConf = fs.readFileSync(path.join(b.confDir, "node.conf"), "utf8");
    assert.doesNotMatch(nodeConf, /primary_conninfo|primary_slot_name/);
    b.launch();
    await streamingFrom(b, a);
    assert.doesNotMatch(b.log(), /setting the passwords/, "a standby never converges roles");

    // Stopped behind the entrypoint's back (no hold): it exits, for Docker's restart policy.
    const stopped = execFileSync(
      "setpriv",
      [
        "--reuid=postgres",
        "--regid=postgres",
        "--init-groups",
        "--",
        "pg_ctl",
        "stop",
        "-D",
        b.pgdata,
        "-m",
        "fast",
        "-w",
      ],
      { env: b.env(), encoding: "utf8" },
    );
    assert.match(stopped, /server stopped/);
    assert.equal(await b.exited(), 0);
    assert.match(b.log(), /exiting so the container's restart policy restarts the node/);
    b.launch();
    await streamingFrom(b, a);
  });

  it("keeps the passwords out of the servers' environments and the process list", async () => {
    const passfile = path.join(a.confDir, "replication.pgpass");
    assert.equal(fs.statSync(passfile).mode & 0o777, 0o600);
    assert.equal(
      fs.readFileSync(passfile, "utf8"),
      "*:*:*:replicator:repl-it-'quote\\:colon\n",
      "any host, port and database; ':' escaped",
    );
    const postgresUid = Number(execFileSync("id", ["-u", "postgres"], { encoding: "utf8" }));
    for (const n of nodes.nodes) {
      // The passwords come in a file, root's as uploaded; the entrypoint made it the server's only.
      const secrets = fs.statSync(n.env().PGC_SECRETS_FILE);
      assert.deepEqual([secrets.mode & 0o777, secrets.uid], [0o600, postgresUid], "passwords file");
      // The postmaster's environment as the kernel shows it. (Its children's /proc environ is
      // overwritten by their process titles, so a backend's is read by a program it runs.)
      const postmaster = n.postmasterPid();
      assert.ok(postmaster !== null, `${n.name} runs a server`);
      const procEnv = fs.readFileSync(`/proc/${postmaster}/environ`, "utf8");
      const dump = path.join(n.volume, "backend-env");
      // The program reads its input first: one that exits before PostgreSQL has written the row
      // to it fails the COPY with "Broken pipe" (seen in CI under load).
      await sql(n, `COPY (SELECT 1) TO PROGRAM 'cat >/dev/null; env > ${dump}'`);
      const backendEnv = fs.readFileSync(dump, "utf8");
      for (const [what, env] of [
        ["postmaster", procEnv],
        ["backend", backendEnv],
      ]) {
        assert.ok(env.includes(`PGC_NODE_NAME=${n.name}`), `${n.name}'s ${what} environment read`);
        assert.doesNotMatch(env, /PASSWORD=/, `no password variable in ${n.name}'s ${what}`);
        assert.ok(!env.includes(SUPERUSER_PASSWORD) && !env.includes(REPLICATION_PASSWORD));
      }
    }
    const ps = execFileSync("ps", ["-eo", "args"], { encoding: "utf8" });
    assert.ok(ps.includes(`-D ${a.pgdata}`), "the servers are in the process list");
    assert.ok(!ps.includes(SUPERUSER_PASSWORD) && !ps.includes(REPLICATION_PASSWORD));

    // Without its passwords file a node says which file and who provides it.
    const missing = path.join(a.volume, "no-such-secrets");
    const r = spawnSync("bash", [path.join(a.home, "ctl.sh"), "status"], {
      env: { ...a.env(), PGC_SECRETS_FILE: missing },
      encoding: "utf8",
    });
    assert.equal(r.status, 1);
    assert.match(
      r.stderr,
      new RegExp(
        `cannot read the passwords file ${missing}; the PostgresCluster component uploads it`,
      ),
    );
  });

  it("a demoted primary stays down across a restart of its entrypoint; undemote makes it the primary again", async () => {
    const demoted = await a.ctlOk("demote");
    assert.equal(demoted.state, "shut down");
    assert.deepEqual([demoted.standby, demoted.hold, demoted.running], [true, true, false]);
    // At a fast shutdown every walsender sends its standby all WAL up to the shutdown checkpoint.
    for (const n of [b, c]) await replayed(n, demoted.checkpointLsn ?? "", true);

    const refused = await b.ctl("demote");
    assert.notEqual(refused.code, 0);
    assert.match(refused.stderr, /refusing demote: node-b is a standby/);
    const notHeld = await b.ctl("rewind", "host=127.0.0.1");
    assert.match(notHeld.stderr, /refusing rewind: the node is not held; run ctl.sh demote first/);
    const notDemoted = await b.ctl("undemote");
    assert.match(notDemoted.stderr, /refusing undemote: node-b is a standby that was not demoted/);
    for (const run of [refused, notHeld, notDemoted]) assert.notEqual(run.code, 0);
    assert.ok(fs.existsSync(path.join(b.pgdata, "standby.signal")), "refusals change nothing");

    // A container restart in the middle of a switchover: the server must stay down.
    await a.stop("SIGKILL");
    const logged = a.log().length;
    a.launch();
    await waitFor("node-a's entrypoint to wait on hold", 10_000, async () =>
      /held: waiting for ctl.sh release/.test(a.log().slice(logged)) ? true : undefined,
    );
    await sleep(1000);
    const held = await a.ctlOk("status");
    assert.deepEqual([held.standby, held.hold, held.running], [true, true, false]);
    assert.equal(a.postmasterPid(), null);

    const back = await a.ctlOk("undemote");
    assert.equal(back.state, "in production");
    assert.deepEqual([back.standby, back.hold, back.running], [false, false, true]);
    const [{ ro }] = await sql<{ ro: boolean }>(a, "SELECT pg_is_in_recovery() AS ro");
    assert.equal(ro, false);
    for (const n of [b, c]) await streamingFrom(n, a);
  });

  it("switches the primary to node-b with ctl verbs and SQL: no acknowledged write lost, node-a streams from node-b", async (t) => {
    await sql(a, "CREATE TABLE acks (id bigint PRIMARY KEY)");
    writer.start();
    await waitFor("the writer's first 50 commits", 10_000, async () =>
      writer.acked.length >= 50 ? true : undefined,
    );
    const timeline = await writeTimeline(a);
    // Slots for the nodes that will follow node-b, made on it while it is a standby.
    for (const n of [c, a]) {
      await sql(b, "SELECT pg_create_physical_replication_slot($1, true)", [n.slot]);
    }

    const t0 = Date.now();
    const demoted = await a.ctlOk("demote");
    const tDemoted = Date.now();
    assert.equal(demoted.state, "shut down");
    await replayed(b, demoted.checkpointLsn ?? "", true);
    const tReplayed = Date.now();
    const [{ ok }] = await sql<{ ok: boolean }>(b, "SELECT pg_promote(true, 60) AS ok");
    assert.equal(ok, true);
    const tPromoted = Date.now();
    await sql(b, "CHECKPOINT");
    await sql(b, "ALTER SYSTEM RESET primary_conninfo");
    await sql(b, "ALTER SYSTEM RESET primary_slot_name");
    await sql(b, "SELECT pg_reload_conf()");
    assert.equal(await writeTimeline(b), timeline + 1);

    // The other standby: re-pointed by SQL alone (the passfile matches any host).
    await sql(c, `ALTER SYSTEM SET primary_conninfo = '${c.conninfoTo(b)}'`);
    await sql(c, `ALTER SYSTEM SET primary_slot_name = '${c.slot}'`);
    await sql(c, "SELECT pg_reload_conf()");
    await streamingFrom(c, b, timeline + 1);

    // The old primary rejoins: upstream, rewind, release.
    const followed = await a.ctlOk("follow", "127.0.0.1", String(b.port));
    assert.deepEqual([followed.hold, followed.running, followed.standby], [true, false, true]);
    assert.match(
      a.autoConf(),
      new RegExp(`^primary_conninfo = 'host=127.0.0.1 port=${b.port} `, "m"),
    );
    const source = `host=127.0.0.1 port=${b.port} user=replicator dbname=postgres connect_timeout=5`;
    const rewound = await a.ctlOk("rewind", source);
    assert.equal(rewound.rewind, "not needed");
    const t1 = Date.now();
    const released = await a.ctlOk("release");
    assert.deepEqual([released.hold, released.running, released.standby], [false, true, true]);
    await streamingFrom(a, b, timeline + 1);
    const tRejoined = Date.now();
    // The promoted node stopped watching its old upstream (the demoted node-a) at its next slot
    // check (PGC_SLOT_CHECK_SECONDS: 1 s here; this test can get here sooner), and nobody re-cloned.
    await waitFor("node-b's slot watch to see the promotion", 10_000, async () =>
      /the server left recovery \(promoted\): slot watch off/.test(b.log()) ? true : undefined,
    );
    for (const n of [b, c]) assert.equal(n.nodeState().clones, 1, `${n.name} was not re-cloned`);

    await waitFor("the writer's first commit on node-b", 10_000, async () =>
      (writer.ackTimes.at(-1) ?? 0) > tPromoted ? true : undefined,
    );
    await writer.stop();
    const [{ lsn }] = await sql<{ lsn: string }>(b, "SELECT pg_current_wal_lsn()::text AS lsn");
    for (const n of [a, c]) await replayed(n, lsn);
    for (const n of [a, b, c]) {
      const [r] = await sql<{ n: string }>(
        n,
        "SELECT count(*) AS n FROM acks WHERE id = ANY($1::bigint[])",
        [writer.acked],
      );
      assert.equal(Number(r.n), writer.acked.length, `${n.name} holds every acknowledged id`);
    }
    // The demoted node keeps the slots it served; the step drops them (design, step 8).
    const stale = await sql<{ slot_name: string; active: boolean }>(
      a,
      "SELECT slot_name, active FROM pg_replication_slots ORDER BY 1",
    );
    assert.deepEqual(stale, [
      { slot_name: "node_b", active: false },
      { slot_name: "node_c", active: false },
    ]);
    await sql(a, "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots");
    const senders = await sql<{ application_name: string; state: string }>(
      b,
      "SELECT application_name, state FROM pg_stat_replication WHERE application_name NOT LIKE '%-control' ORDER BY 1",
    );
    assert.deepEqual(senders, [
      { application_name: "node-a", state: "streaming" },
      { application_name: "node-c", state: "streaming" },
    ]);
    t.diagnostic(
      `demote ${tDemoted - t0} ms, shutdown checkpoint replayed ${tReplayed - tDemoted} ms later, ` +
        `promoted in ${tPromoted - tReplayed} ms; longest write gap ${writer.longestGapMs()} ms, ` +
        `${writer.acked.length} ids acknowledged, none lost; node-a streaming ${tRejoined - t1} ms after release`,
    );
  });

  it("a rewind that copies files leaves the node a standby of its upstream, with its own clone record", async () => {
    // node-c diverges: promoted while node-b stays the primary, then a write of its own.
    await sql(c, "SELECT pg_promote(true, 60)");
    await sql(c, "CREATE TABLE diverged (id int)");
    const demoted = await c.ctlOk("demote");
    assert.equal(demoted.state, "shut down");
    const rewound = await c.ctlOk(
      "rewind",
      `host=127.0.0.1 port=${b.port} user=replicator dbname=postgres connect_timeout=5`,
    );
    assert.equal(rewound.rewind, "done");
    assert.equal(rewound.standby, true, "standby.signal is back (the source has none)");
    assert.match(c.autoConf(), new RegExp(`^primary_conninfo = '.*port=${b.port} `, "m"));
    assert.match(c.autoConf(), /^primary_slot_name = 'node_c'$/m);
    assert.deepEqual([c.nodeState().node, c.nodeState().clones], ["node-c", 1]);
    await c.ctlOk("release");
    const timeline = await writeTimeline(b);
    await streamingFrom(c, b, timeline);
    const [{ t }] = await sql<{ t: string | null }>(c, "SELECT to_regclass('diverged')::text AS t");
    assert.equal(t, null, "the diverged write is gone");
  });

  it("the slot watch re-clones from the current upstream once it invalidated the standby's slot", async (t) => {
    await sql(b, "CREATE TABLE marks (id int)");
    await sql(b, "INSERT INTO marks VALUES (1)");
    assert.equal(await c.stop(), 0);
    // Past max_slot_wal_keep_size (64MB) and wal_keep_size (128MB): 14 segments of 16MB.
    for (let i = 0; i < 14; i++) {
      await sql(b, "INSERT INTO marks VALUES ($1)", [i + 2]);
      await sql(b, "SELECT pg_switch_wal()");
    }
    await sql(b, "CHECKPOINT");
    const [slot] = await sql<{ wal_status: string }>(
      b,
      "SELECT wal_status FROM pg_replication_slots WHERE slot_name = 'node_c'",
    );
    assert.equal(slot.wal_status, "lost", "node-b invalidated node-c's slot");
    const logged = c.log().length;
    const t0 = Date.now();
    c.launch();
    await waitFor("node-c to re-clone", 60_000, async () =>
      /clone complete/.test(c.log().slice(logged)) ? true : undefined,
    );
    await streamingFrom(c, b);
    const tStreaming = Date.now();
    assert.match(c.log().slice(logged), /upstream 127\.0\.0\.1:\d+ invalidated slot node_c/);
    assert.deepEqual(
      [c.nodeState().clones, c.nodeState().lastCloneReason],
      [2, "slot lost"],
      "counted",
    );
    assert.ok(fs.existsSync(path.join(c.pgdata, "standby.signal")));
    assert.match(c.autoConf(), new RegExp(`^primary_conninfo = '.*port=${b.port} `, "m"));
    const [reserved] = await sql<{ wal_status: string; active: boolean }>(
      b,
      "SELECT wal_status, active FROM pg_replication_slots WHERE slot_name = 'node_c'",
    );
    assert.deepEqual(reserved, { wal_status: "reserved", active: true });
    const [{ n }] = await sql<{ n: string }>(c, "SELECT count(*) AS n FROM marks");
    assert.equal(Number(n), 15);
    t.diagnostic(
      `lost slot noticed, re-cloned and streaming ${tStreaming - t0} ms after the start`,
    );
  });
});
