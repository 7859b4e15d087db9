/**
 * The PostgreSQL mechanics that docs/design/primary-as-role.md relies on, proven on real
 * PostgreSQL processes on loopback: a primary and two replicas started from the real assets
 * (LocalCluster), then moved by hand, step by step, the way the switchover step will move them.
 * Where today's entrypoints cannot do a step (stop the primary without the container going away,
 * start a node as a standby of another), the test does it with pg_ctl on the node's own data
 * directory; the design says what the assets must change.
 */
import * as assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { after, before, describe, it } from "node:test";
import { LocalCluster, LocalNode, REPLICATION_PASSWORD } from "./localCluster";
import {
  AckWriter,
  Server,
  asPostgres,
  candidateProblems,
  controlData,
  output,
  rejoinLog,
  repoint,
  sql,
  waitFor,
  walReceiver,
  writeAnyHostPassfile,
  writeTimeline,
} from "./switchoverSteps";

/** The switchover's lag bound in this test: 1 MiB of WAL. */
const MAX_LAG_BYTES = 1024 * 1024;

const server = (n: LocalNode): Server => ({ name: n.name, port: n.port });
const pgdata = (n: LocalNode) => path.join(n.volume, "pgdata");
const confDir = (n: LocalNode) => path.join(n.volume, "conf");

describe(
  "planned switchover on real PostgreSQL (mechanics of the design)",
  {
    timeout: 120_000,
  },
  () => {
    const cluster = new LocalCluster({ replicas: 2 });
    const oldPrimary = cluster.primary;
    const [candidate, other] = cluster.replicas;
    const P = server(oldPrimary);
    const C = server(candidate);
    const O = server(other);
    const writer = new AckWriter([P, C]);
    /** Data directories this test started with pg_ctl itself (not through an entrypoint). */
    const startedHere: string[] = [];
    let timelineBefore = 0;
    let timelineAfter = 0;

    before(async () => {
      await cluster.start();
      const verified = cluster.verify(60);
      assert.equal(verified.status, 0, verified.stderr);
      await sql(P, "CREATE TABLE acks (id bigint PRIMARY KEY)");
    });

    after(async () => {
      await writer.stop().catch(() => {});
      for (const dir of startedHere) {
        if (fs.existsSync(path.join(dir, "postmaster.pid"))) {
          asPostgres("pg_ctl", ["stop", "-D", dir, "-m", "immediate", "-w", "-t", "20"]);
        }
      }
      await cluster.destroy();
    });

    it("refuses a candidate whose replay is paused or that lags past the bound, and changes nothing", async () => {
      assert.deepEqual(await candidateProblems(P, C, MAX_LAG_BYTES), [], "a healthy candidate");
      await sql(C, "SELECT pg_wal_replay_pause()");
      // With the primary idle, a paused standby shows no lag at all: only the pause state tells.
      const paused = await candidateProblems(P, C, MAX_LAG_BYTES);
      assert.equal(paused.length, 1, paused.join("; "));
      assert.match(paused[0], /^replica-1: WAL replay is (paused|pause requested)$/);

      // ~2.5 MB of WAL the paused candidate does not replay: now the lag bound refuses too.
      await sql(
        P,
        "CREATE TABLE filler AS SELECT g, repeat('x', 100) AS t FROM generate_series(1, 20000) g",
      );
      const behind = await candidateProblems(P, C, MAX_LAG_BYTES);
      assert.ok(
        behind.some((p) => /^replica-1 is \d+ bytes behind \(limit 1048576\)$/.test(p)),
        behind.join("; "),
      );

      // Checking changed nothing: same primary, same timeline, the candidate still a standby.
      const [p] = await sql<{ ro: boolean }>(P, "SELECT pg_is_in_recovery() AS ro");
      const [c] = await sql<{ ro: boolean }>(C, "SELECT pg_is_in_recovery() AS ro");
      assert.deepEqual([p.ro, c.ro], [false, true]);
      timelineBefore = await writeTimeline(P);

      await sql(C, "SELECT pg_wal_replay_resume()");
      await waitFor("the resumed candidate to pass the checks", 10_000, async () =>
        (await candidateProblems(P, C, MAX_LAG_BYTES)).length === 0 ? true : undefined,
      );
    });

    it("moves the primary to replica-1 with no acknowledged write lost, onto a new timeline", async (t) => {
      writer.start();
      await waitFor("the writer's first 50 commits", 10_000, async () =>
        writer.acked.length >= 50 ? true : undefined,
      );
      assert.deepEqual(await candidateProblems(P, C, MAX_LAG_BYTES), []);

      // Slots for the nodes that will follow the candidate, made on it while it is a standby, so
      // their WAL is retained from the moment they reconnect (or the other standby must re-clone).
      for (const slot of ["replica_2", "primary"]) {
        await sql(C, "SELECT pg_create_physical_replication_slot($1, true)", [slot]);
      }
      const reserved = await sql<{ slot_name: string; reserved: boolean }>(
        C,
        "SELECT slot_name, restart_lsn IS NOT NULL AS reserved FROM pg_replication_slots ORDER BY 1",
      );
      assert.deepEqual(reserved, [
        { slot_name: "primary", reserved: true },
        { slot_name: "replica_2", reserved: true },
      ]);

      // A checkpoint first, so the shutdown checkpoint has little to write; then a fast stop.
      // Walsenders send everything up to the shutdown checkpoint to connected standbys first.
      await sql(P, "CHECKPOINT");
      const t0 = Date.now();
      const stopped = asPostgres("pg_ctl", ["stop", "-D", pgdata(oldPrimary), "-m", "fast", "-w"]);
      assert.equal(stopped.status, 0, output(stopped));
      const tStopped = Date.now();
      const shutdown = controlData(pgdata(oldPrimary));
      assert.equal(shutdown.state, "shut down");
      assert.equal(shutdown.checkpointTimeline, timelineBefore);

      // Promote only once the candidate has replayed the shutdown checkpoint record: then it has
      // every commit the old primary ever acknowledged.
      await waitFor(
        "the candidate to replay the old primary's shutdown checkpoint",
        10_000,
        async () => {
          const [r] = await sql<{ done: boolean }>(
            C,
            "SELECT pg_last_wal_replay_lsn() > $1::pg_lsn AS done",
            [shutdown.checkpointLsn],
          );
          return r.done ? true : undefined;
        },
      );
      const tReplayed = Date.now();
      const [promoted] = await sql<{ ok: boolean }>(C, "SELECT pg_promote(true, 60) AS ok");
      assert.equal(promoted.ok, true);
      const tPromoted = Date.now();
      // The end-of-recovery checkpoint is asynchronous; pg_rewind reads the timeline from the
      // control file, so force it now (CloudNativePG does the same after its promote).
      await sql(C, "CHECKPOINT");
      assert.equal(controlData(pgdata(candidate)).checkpointTimeline, timelineBefore + 1);
      timelineAfter = await writeTimeline(C);
      assert.equal(timelineAfter, timelineBefore + 1, "promoted on a new timeline");

      await waitFor("the writer's first commit on the new primary", 10_000, async () =>
        (writer.ackTimes.at(-1) ?? 0) > tPromoted ? true : undefined,
      );
      const acked = [...writer.acked];
      const [present] = await sql<{ n: string }>(
        C,
        "SELECT count(*) AS n FROM acks WHERE id = ANY($1::bigint[])",
        [acked],
      );
      assert.equal(Number(present.n), acked.length, "every acknowledged id is on the new primary");
      t.diagnostic(
        `fast stop ${tStopped - t0} ms, shutdown checkpoint replayed ${tReplayed - tStopped} ms later, ` +
          `promoted in ${tPromoted - tReplayed} ms; longest write gap ${writer.longestGapMs()} ms ` +
          `(${acked.length} ids acknowledged, none lost)`,
      );
    });

    it("re-points the other standby with ALTER SYSTEM + pg_reload_conf(), without a restart", async (t) => {
      const [{ started }] = await sql<{ started: string }>(
        O,
        "SELECT pg_postmaster_start_time()::text AS started",
      );
      // The entrypoint's passfile names only the old primary's host:port, so the re-pointed WAL
      // receiver finds no password: the asset must write one for any host (design, section B).
      await repoint(O, C, "replica_2", path.join(confDir(other), "replication.pgpass"));
      await waitFor("replica-2's WAL receiver to fail for want of a password", 10_000, async () =>
        /fe_sendauth: no password supplied/.test(other.log()) ? true : undefined,
      );

      const passfile = path.join(confDir(other), "any-host.pgpass");
      writeAnyHostPassfile(passfile, "replicator", REPLICATION_PASSWORD, ["replication"]);
      const t0 = Date.now();
      await repoint(O, C, "replica_2", passfile);
      // It first streams the rest of the old timeline from the switch point, then the new one.
      const receiver = await waitFor(
        "replica-2 to stream timeline 2 from replica-1",
        10_000,
        async () => {
          const r = await walReceiver(O);
          return r?.status === "streaming" &&
            r.senderPort === C.port &&
            r.receivedTli === timelineAfter
            ? r
            : undefined;
        },
      );
      const tStreaming = Date.now();
      assert.equal(receiver.slotName, "replica_2");
      const [{ started: startedAfter }] = await sql<{ started: string }>(
        O,
        "SELECT pg_postmaster_start_time()::text AS started",
      );
      assert.equal(startedAfter, started, "the server was not restarted");
      const senders = await sql<{ application_name: string; state: string; active: boolean }>(
        C,
        `SELECT r.application_name, r.state, s.active FROM pg_stat_replication r
         JOIN pg_replication_slots s ON s.active_pid = r.pid`,
      );
      assert.deepEqual(senders, [
        { application_name: "replica-2", state: "streaming", active: true },
      ]);
      t.diagnostic(
        `re-pointed and streaming on timeline ${timelineAfter} ${tStreaming - t0} ms after the reload`,
      );
    });

    it("the old primary rejoins as a standby through pg_rewind, without a re-clone", async (t) => {
      const dir = pgdata(oldPrimary);
      const passfile = path.join(confDir(oldPrimary), "any-host.pgpass");
      writeAnyHostPassfile(passfile, "replicator", REPLICATION_PASSWORD, [
        "replication",
        "postgres",
      ]);
      const source = `host=127.0.0.1 port=${C.port} user=replicator dbname=postgres passfile=${passfile} connect_timeout=5`;
      const rewind = () => asPostgres("pg_rewind", ["-D", dir, "--source-server", source]);

      // 1. Today's pg_hba.conf lets the replication role open no ordinary session, which
      //    pg_rewind needs (it reads files through SQL functions, not the replication protocol).
      const refused = rewind();
      assert.notEqual(refused.status, 0);
      assert.match(
        refused.stderr,
        /pg_hba\.conf rejects connection .*user "replicator", database "postgres"/,
      );

      // 2. Allowed into database postgres from the cluster's network, it still lacks the grants.
      const hba = path.join(confDir(candidate), "pg_hba.conf");
      fs.writeFileSync(
        hba,
        `host postgres replicator ${cluster.replicationCidr} scram-sha-256\n${fs.readFileSync(hba, "utf8")}`,
      );
      await sql(C, "SELECT pg_reload_conf()");
      const denied = rewind();
      assert.notEqual(denied.status, 0);
      assert.match(denied.stderr, /permission denied for function pg_read_binary_file/);

      // 3. The four grants pg_rewind's documentation lists suffice: no superuser needed. They are
      //    per database (each has its own pg_catalog): made in the one pg_rewind connects to.
      for (const fn of [
        "pg_ls_dir(text, boolean, boolean)",
        "pg_stat_file(text, boolean)",
        "pg_read_binary_file(text)",
        "pg_read_binary_file(text, bigint, bigint, boolean)",
      ]) {
        await sql(C, `GRANT EXECUTE ON FUNCTION pg_catalog.${fn} TO replicator`, [], "postgres");
      }
      const rewound = rewind();
      assert.equal(rewound.status, 0, output(rewound));
      assert.match(rewound.stderr + rewound.stdout, /no rewind required|Done!/);
      const verdict = /no rewind required/.test(rewound.stderr + rewound.stdout)
        ? "no rewind required"
        : "rewound";

      // Start it as a standby with no upstream yet, then point it at the new primary by SQL.
      const signal = asPostgres("touch", [path.join(dir, "standby.signal")]);
      assert.equal(signal.status, 0, output(signal));
      startedHere.push(dir);
      const t0 = Date.now();
      const started = asPostgres("pg_ctl", [
        "start",
        "-w",
        "-t",
        "60",
        "-D",
        dir,
        "-o",
        `-c config_file=${path.join(confDir(oldPrimary), "postgresql.conf")}`,
        "-l",
        rejoinLog(oldPrimary.volume),
      ]);
      assert.equal(started.status, 0, output(started));
      await repoint(P, C, "primary", passfile);
      await waitFor(
        "the old primary to stream the new timeline from replica-1",
        10_000,
        async () => {
          const r = await walReceiver(P);
          return r?.status === "streaming" &&
            r.senderPort === C.port &&
            r.receivedTli === timelineAfter
            ? r
            : undefined;
        },
      );
      const [state] = await sql<{ ro: boolean; sysid: string }>(
        P,
        "SELECT pg_is_in_recovery() AS ro, system_identifier::text AS sysid FROM pg_control_system()",
      );
      const [newPrimary] = await sql<{ sysid: string }>(
        C,
        "SELECT system_identifier::text AS sysid FROM pg_control_system()",
      );
      assert.deepEqual(state, { ro: true, sysid: newPrimary.sysid });
      t.diagnostic(
        `pg_rewind as replicator with 4 grants: ${verdict}; standby streaming ${Date.now() - t0} ms after start`,
      );
    });

    it("leaves no slot pinning WAL: the demoted node's old slots are dropped", async () => {
      // Slots live in pg_replslot of the node that made them; the demoted primary keeps its own.
      const stale = await sql<{ slot_name: string; active: boolean }>(
        P,
        "SELECT slot_name, active FROM pg_replication_slots ORDER BY 1",
      );
      assert.deepEqual(stale, [
        { slot_name: "replica_1", active: false },
        { slot_name: "replica_2", active: false },
      ]);
      await sql(
        P,
        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE NOT active",
      );
      const slots = async (s: Server) =>
        (
          await sql<{ slot_name: string; active: boolean }>(
            s,
            "SELECT slot_name, active FROM pg_replication_slots ORDER BY 1",
          )
        ).map((r) => `${r.slot_name}:${r.active ? "active" : "inactive"}`);
      assert.deepEqual(await slots(P), []);
      assert.deepEqual(await slots(O), []);
      assert.deepEqual(await slots(C), ["primary:active", "replica_2:active"]);
    });

    it("every acknowledged id is on every node, and the new primary has two streaming standbys", async (t) => {
      await writer.stop();
      const [{ lsn }] = await sql<{ lsn: string }>(C, "SELECT pg_current_wal_lsn()::text AS lsn");
      for (const s of [P, O]) {
        await waitFor(`${s.name} to replay ${lsn}`, 10_000, async () => {
          const [r] = await sql<{ done: boolean }>(
            s,
            "SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn AS done",
            [lsn],
          );
          return r.done ? true : undefined;
        });
      }
      for (const s of [C, P, O]) {
        const [r] = await sql<{ n: string }>(
          s,
          "SELECT count(*) AS n FROM acks WHERE id = ANY($1::bigint[])",
          [writer.acked],
        );
        assert.equal(Number(r.n), writer.acked.length, `${s.name} holds every acknowledged id`);
      }
      const standbys = await sql<{ application_name: string; state: string }>(
        C,
        "SELECT application_name, state FROM pg_stat_replication ORDER BY 1",
      );
      assert.deepEqual(standbys, [
        { application_name: "primary", state: "streaming" },
        { application_name: "replica-2", state: "streaming" },
      ]);
      t.diagnostic(
        `${writer.acked.length} acknowledged ids on all 3 nodes; longest write gap over the run ${writer.longestGapMs()} ms`,
      );
    });
  },
);
