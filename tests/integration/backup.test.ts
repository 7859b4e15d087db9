/**
 * Backups with pgBackRest (issue 12), the node side: nodes run by the real entrypoint with
 * PGC_BACKUP=on and a repository in a scratch directory, Debian's pgBackRest on the host. The
 * primary archives WAL (a standby does not), `ctl.sh backup-stanza` and `backup full` make the
 * stanza and a backup that `backup-info` reports, and `ctl.sh bootstrap-restore` makes new
 * clusters from that repository (read, never written): to a point in time T, the marker rows
 * written before T are there; to the end of the archive, the table dropped after T is gone. With
 * TLS, a standby backs up through the primary's pgBackRest server (ctl.sh backup-serve), which
 * serves the one standby it was started for.
 */
import * as assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as net from "node:net";
import * as path from "node:path";
import { after, describe, it } from "node:test";
import pg from "pg";
import { createCa } from "../../assets/tls.mjs";
import { BackupResult } from "../../components/backup";
import { SUPERUSER_PASSWORD, runAssetAsync } from "./localCluster";
import { EntrypointNode, LocalNodes, NodeStatus, tlsBundle } from "./localNode2";
import { sql, waitFor } from "./switchoverSteps";

/** The part of `pgbackrest info --output=json` the tests read. */
interface StanzaInfo {
  name: string;
  status: { code: number; message: string };
  archive: { min: string | null; max: string | null }[];
  backup: { label: string; type: string; timestamp: { start: number; stop: number } }[];
}

describe("pgBackRest backups of nodes run by the entrypoint", { timeout: 240_000 }, () => {
  const stanza = "it-backup";
  const nodes = new LocalNodes(["bk-a", "bk-b"], {
    env: { PGC_BACKUP: "on", PGC_STANZA: stanza, PGC_BACKUP_REPO: "" },
  });
  const repo = path.join(nodes.dir, "repo");
  // Every node's PGC_BACKUP_REPO: one repository, as the component mounts one volume in each.
  nodes.options.env!.PGC_BACKUP_REPO = repo;
  const [a, b] = nodes.nodes;
  // New clusters restored from that repository (only read: PGC_RESTORE_REPO), without backups.
  const restoredNodes = new LocalNodes(["rs-at-t", "rs-latest", "rs-after-last", "rs-at-lsn"], {
    env: {
      PGC_RESTORE_REPO: repo,
      PGC_SUPERUSER: "restorer",
      PGC_DATABASE: "restoredb",
      PGC_RESTORE_WAIT_SECONDS: "120",
    },
  });

  after(async () => {
    await restoredNodes.destroy();
    await nodes.destroy();
  });

  /** The label of the first test's full backup. */
  let fullBackup = "";

  /** `ctl.sh VERB` that must succeed; its result line with pgBackRest's info, if it printed one. */
  async function ctlInfo(node: EntrypointNode, ...verb: string[]) {
    return (await node.ctlOk(verb[0], ...verb.slice(1))) as NodeStatus & { info?: StanzaInfo[] };
  }

  it("the primary archives into the repository; stanza, full backup and info through ctl.sh", async (t) => {
    a.launch();
    b.launch();
    await a.ctlOk("bootstrap-initdb");
    await b.ctlOk("bootstrap-clone", "127.0.0.1", String(a.port));
    assert.equal(fs.statSync(repo).mode & 0o777, 0o750, "the repository is the server user's");
    const [mode] = await sql<{ archive_mode: string }>(a, "SHOW archive_mode");
    assert.equal(mode.archive_mode, "on");

    const refused = await b.ctl("backup-stanza");
    assert.notEqual(refused.code, 0);
    assert.match(refused.stderr, /refusing backup-stanza: it runs on the primary, and bk-b is not/);

    // The stanza was made by bootstrap-initdb before the server's first start: nothing the
    // primary archived failed for want of it.
    const [made] = (await ctlInfo(a, "backup-info")).info ?? [];
    assert.equal(
      made?.status.code,
      2,
      `the stanza exists, without a backup: ${made?.status.message}`,
    );
    // Synchronous, as a cluster with synchronousReplicas is: a restore must not inherit it.
    await sql(a, `ALTER SYSTEM SET synchronous_standby_names = 'ANY 1 ("bk-b")'`);
    await sql(a, "SELECT pg_reload_conf()");
    assert.equal((await a.ctlOk("backup-stanza")) && true, true);
    const [{ failed }] = await sql<{ failed: string }>(
      a,
      "SELECT failed_count AS failed FROM pg_stat_archiver",
    );
    assert.equal(Number(failed), 0, "no archive_command failed");
    const t0 = Date.now();
    const { info } = await ctlInfo(a, "backup", "full");
    t.diagnostic(`full backup of a new cluster: ${Date.now() - t0} ms`);
    assert.ok(info, "backup prints pgBackRest's info");
    const [s] = info;
    fullBackup = s.backup[0]?.label;
    assert.equal(s.name, stanza);
    assert.equal(s.status.code, 0, s.status.message);
    assert.deepEqual(
      s.backup.map((x) => x.type),
      ["full"],
    );
    assert.match(s.archive[0].max ?? "", /^[0-9A-F]{24}$/, "WAL archived up to the backup");

    // The standby does not archive: only the primary's segments reach the repository.
    const [archiver] = await sql<{ archived_count: string }>(
      b,
      "SELECT archived_count FROM pg_stat_archiver",
    );
    assert.equal(Number(archiver.archived_count), 0);
  });

  it("bootstrap-restore makes a new cluster from the repository: to T, to an LSN, and to the end of the archive", async (t) => {
    // pgBackRest picks a backup that stopped before T, by its stop time in whole seconds.
    await new Promise((r) => setTimeout(r, 1100));
    await sql(a, "CREATE TABLE marker AS SELECT g AS id FROM generate_series(1, 100) g");
    const [{ at, lsn }] = await sql<{ at: string; lsn: string }>(
      a,
      "SELECT clock_timestamp()::text AS at, pg_current_wal_lsn()::text AS lsn",
    );
    await new Promise((r) => setTimeout(r, 1100));
    await sql(a, "DROP TABLE marker");
    const [{ wal }] = await sql<{ wal: string }>(
      a,
      "SELECT pg_walfile_name(pg_switch_wal()) AS wal",
    );
    await waitFor(`${wal} archived`, 30_000, async () => {
      const [r] = await sql<{ last: string | null }>(
        a,
        "SELECT last_archived_wal AS last FROM pg_stat_archiver",
      );
      return r.last !== null && r.last >= wal ? true : undefined;
    });

    // Two new one-node clusters with another superuser and database, reading a's repository.
    const before = listing(repo);
    const [toT, toLatest, afterLast, toLsn] = restoredNodes.nodes;
    for (const n of restoredNodes.nodes) n.launch();
    // A time after the archive's last commit: PostgreSQL alone stops with "recovery ended before
    // configured recovery target was reached"; the archive's end is the cluster at that time.
    const [{ now }] = await sql<{ now: string }>(a, "SELECT clock_timestamp()::text AS now");
    // The four at once: each its own node and volume, the repository only read (a sequence of
    // them was a third of this layer's longest file).
    const t0 = Date.now();
    const [status, , idle] = await Promise.all([
      toT.ctlOk("bootstrap-restore", stanza, at),
      toLatest.ctlOk("bootstrap-restore", stanza),
      afterLast.ctl("bootstrap-restore", stanza, now),
      // The WAL location right after the marker rows' commit, from the backup the guard chose.
      toLsn.ctlOk("bootstrap-restore", stanza, lsn, fullBackup),
    ]);
    t.diagnostic(`four restores with recovery, at once: ${Date.now() - t0} ms`);
    assert.equal(status.running, true);
    assert.equal(status.standby, false);
    assert.equal(idle.code, 0, idle.stderr);
    assert.match(idle.stderr, /the archive holds no transaction after/);

    for (const n of [toT, toLsn]) {
      const [atT] = await restoredSql(
        n,
        "SELECT pg_is_in_recovery() AS r, count(*) AS n FROM marker",
      );
      assert.deepEqual(atT, { r: false, n: "100" }, `${n.name}: the marker rows as they were`);
    }
    for (const n of [toLatest, afterLast]) {
      const [latest] = await restoredSql(n, "SELECT to_regclass('marker') AS m");
      assert.equal(
        latest.m,
        null,
        `${n.name}: restored to the end of the archive, the table dropped`,
      );
    }
    // This cluster's database, roles and passwords; nothing of recovery left to apply again.
    const [made] = await restoredSql(
      toT,
      `SELECT (SELECT count(*) FROM pg_database WHERE datname = 'restoredb') AS db,
              (SELECT rolreplication FROM pg_roles WHERE rolname = 'replicator') AS repl,
              current_setting('restore_command') AS rc,
              current_setting('recovery_target_time') AS target,
              current_setting('synchronous_standby_names') AS sync`,
    );
    assert.deepEqual(made, { db: "1", repl: true, rc: "", target: "", sync: "" });
    // A commit waits for no standby of the source's.
    await restoredSql(toT, "CREATE TABLE written_after_restore (id int)");
    const auto = fs.readFileSync(path.join(toT.pgdata, "postgresql.auto.conf"), "utf8");
    assert.doesNotMatch(auto, /restore_command|recovery_target|synchronous_standby_names/);
    assert.deepEqual(listing(repo), before, "the source repository is only read");

    // A volume that holds a cluster is refused, and changes nothing.
    const again = await toT.ctl("bootstrap-restore", stanza);
    assert.notEqual(again.code, 0);
    assert.match(again.stderr, /refusing: the volume already holds a cluster/);
  });

  it("with TLS, backs up from the standby through the primary's pgBackRest server, serving only that standby", async (t) => {
    // Last: TLS on these nodes takes plain connections (the tests above) away.
    const ca = await createCa({ commonName: "pg-cluster backup test CA", days: 2 });
    for (const n of [a, b]) {
      const run = await n.ctlWithInput(await tlsBundle(ca, n.name), "tls");
      assert.equal(run.code, 0, run.stderr);
    }
    const wrongRole = await b.ctl("backup-serve", a.name);
    assert.match(
      wrongRole.stderr,
      /refusing backup-serve: it runs on the primary, and bk-b is not/,
    );

    // Started for another client's certificate: the standby's is refused, nothing is taken.
    const served = (await a.ctlOk("backup-serve", "someone-else")) as NodeStatus & {
      backupServer: { port: number; pgPort: number; pgPath: string; socketDir: string };
    };
    const { port, pgPort, pgPath, socketDir } = served.backupServer;
    const primary = ["localhost", String(port), String(pgPort), pgPath, socketDir];
    const refused = await b.ctl("backup", "full", ...primary);
    assert.notEqual(refused.code, 0);
    assert.match(refused.stderr, /access denied/);

    await a.ctlOk("backup-serve-stop");

    // The backup step's program, as the component runs it: it picks the streaming standby,
    // starts the primary's server for it, backs up there, stops the server. Incremental (on the
    // first test's full backup): the same path as a full one, for less of CI's time.
    const ctl = (n: EntrypointNode, env: Record<string, string> = {}) => ({
      argv: ["bash", path.join(n.home, "ctl.sh")],
      env: { ...n.env(), ...env },
    });
    const step = async (ctls: Record<string, ReturnType<typeof ctl>>) => {
      const r = await runAssetAsync("backup.mjs", {
        PGC_NODES: JSON.stringify(
          [a, b].map((n) => ({
            name: n.name,
            host: "127.0.0.1",
            port: n.port,
            internalHost: "localhost",
            internalPort: n.port,
            slot: n.slot,
          })),
        ),
        PGC_SUPERUSER: "postgres",
        PGC_SUPERUSER_PASSWORD: SUPERUSER_PASSWORD,
        PGC_DATABASE: "mydb",
        PGC_TLS_CA: ca.certificate,
        PGC_BACKUP_TYPE: "incr",
        PGC_CTL: JSON.stringify(ctls),
      });
      assert.equal(r.status, 0, r.stderr);
      return JSON.parse(r.stdout) as BackupResult;
    };
    const t0 = Date.now();
    const taken = await step({ [a.name]: ctl(a), [b.name]: ctl(b) });
    t.diagnostic(`incremental backup from the standby: ${Date.now() - t0} ms`);
    assert.deepEqual(
      [taken.node, taken.type, taken.fromStandby, taken.primaryBecause],
      [b.name, "incr", true, undefined],
      "read from the standby, as pgBackRest recorded it",
    );
    // The primary's info agrees (it reads the same repository).
    const seen = (await a.ctlOk("backup-info")) as NodeStatus & { standbyLabels: string[] };
    assert.deepEqual(seen.standbyLabels, [taken.label]);

    // pgBackRest failing on the standby: the step takes the backup on the primary, says why.
    const fake = path.join(nodes.dir, "fake-bin");
    fs.mkdirSync(fake, { recursive: true });
    fs.writeFileSync(
      path.join(fake, "pgbackrest"),
      `#!/bin/sh\nfor a; do [ "$a" = backup ] && { echo 'ERROR: a stand-in failure' >&2; exit 1; }; done\nexec ${execFileSync("which", ["pgbackrest"], { encoding: "utf8" }).trim()} "$@"\n`,
      { mode: 0o755 },
    );
    const failing = ctl(b, { PATH: `${fake}:${b.env().PATH}` });
    const fallback = await step({ [a.name]: ctl(a), [b.name]: failing });
    assert.deepEqual([fallback.node, fallback.fromStandby], [a.name, false]);
    assert.match(
      fallback.primaryBecause ?? "",
      /the backup from bk-b failed: .*a stand-in failure/s,
    );

    // The step stopped the server it started.
    assert.equal(fs.existsSync(path.join(a.volume, "pgbackrest", "server.pid")), false);
    await waitFor(
      "the server to stop listening",
      10_000,
      () =>
        new Promise<true | undefined>((resolve) => {
          const socket = net.connect(port, "127.0.0.1");
          socket.once("connect", () => (socket.destroy(), resolve(undefined)));
          socket.once("error", () => resolve(true));
        }),
    );
  });
});

/** Every file under `dir` with its size and modification time, sorted. */
function listing(dir: string): string[] {
  return (fs.readdirSync(dir, { recursive: true }) as string[])
    .map((f) => {
      const st = fs.statSync(path.join(dir, f));
      return `${f} ${st.size} ${st.mtimeMs}`;
    })
    .sort();
}

/** One query as the restored clusters' superuser, in the source's database. */
async function restoredSql(node: EntrypointNode, text: string): Promise<Record<string, unknown>[]> {
  const c = new pg.Client({
    host: "127.0.0.1",
    port: node.port,
    user: "restorer",
    password: SUPERUSER_PASSWORD,
    database: "mydb",
    connectionTimeoutMillis: 5000,
  });
  await c.connect();
  try {
    return (await c.query(text)).rows;
  } finally {
    await c.end();
  }
}
