/**
 * Backups with pgBackRest (issue 12), the node side: nodes run by the real entrypoint with
 * PGC_BACKUP=on and a repository in a scratch directory, Debian's pgBackRest on the host. The
 * primary archives WAL (a standby does not), `ctl.sh backup-stanza` and `backup full` make the
 * stanza and a backup that `backup-info` reports, and the repository restores to a point in time:
 * the marker rows written before T are there, the table dropped after T too.
 */
import * as assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { after, describe, it } from "node:test";
import { postgresBinDir } from "./localCluster";
import { EntrypointNode, LocalNodes, NodeStatus } from "./localNode2";
import { asPostgres, output, sql, waitFor } from "./switchoverSteps";

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
  const restored = path.join(nodes.dir, "restored");

  after(async () => {
    if (fs.existsSync(path.join(restored, "postmaster.pid"))) {
      asPostgres("pg_ctl", ["-D", restored, "-m", "immediate", "-w", "stop"]);
    }
    await nodes.destroy();
  });

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

    assert.equal((await a.ctlOk("backup-stanza")) && true, true);
    const t0 = Date.now();
    const { info } = await ctlInfo(a, "backup", "full");
    t.diagnostic(`full backup of a new cluster: ${Date.now() - t0} ms`);
    assert.ok(info, "backup prints pgBackRest's info");
    const [s] = info;
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

  it("restores to a point in time: rows before T, the table dropped after T still there", async () => {
    // pgBackRest picks a backup that stopped before T, by its stop time in whole seconds.
    await new Promise((r) => setTimeout(r, 1100));
    await sql(a, "CREATE TABLE marker AS SELECT g AS id FROM generate_series(1, 100) g");
    const [{ t }] = await sql<{ t: string }>(a, "SELECT clock_timestamp()::text AS t");
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

    // Restored with the node's own configuration, into a directory of its own, then started
    // by hand on a private socket: recovery fetches WAL from the repository, stops at T and
    // promotes (pgBackRest writes restore_command and the target into postgresql.auto.conf).
    fs.mkdirSync(restored, { mode: 0o700 });
    fs.chownSync(restored, fs.statSync(a.pgdata).uid, fs.statSync(a.pgdata).gid);
    const restore = asPostgres("pgbackrest", [
      `--config=${path.join(a.confDir, "pgbackrest.conf")}`,
      `--stanza=${stanza}`,
      `--pg1-path=${restored}`,
      "--type=time",
      `--target=${t}`,
      "--target-action=promote",
      "restore",
    ]);
    assert.equal(restore.status, 0, output(restore));
    const sock = path.join(nodes.dir, "restored-sock");
    fs.mkdirSync(sock);
    fs.chownSync(sock, fs.statSync(a.pgdata).uid, fs.statSync(a.pgdata).gid);
    const started = asPostgres("pg_ctl", [
      "-D",
      restored,
      "-w",
      "-t",
      "60",
      "-l",
      path.join(restored, "restore.log"),
      "-o",
      // At least the primary's values, or recovery refuses (as for any standby).
      `-c listen_addresses= -c unix_socket_directories=${sock} -c archive_mode=off -c port=5432 -c max_wal_senders=32 -c max_replication_slots=32`,
      "start",
    ]);
    const log = () => fs.readFileSync(path.join(restored, "restore.log"), "utf8");
    assert.equal(started.status, 0, `${output(started)}\n${log()}`);
    const count = await waitFor("the restored server to promote", 60_000, async () => {
      const r = asPostgres(path.join(postgresBinDir(), "psql"), [
        "-h",
        sock,
        "-U",
        "postgres",
        "-d",
        "mydb",
        "-XAtc",
        "SELECT pg_is_in_recovery(), (SELECT count(*) FROM marker)",
      ]);
      return r.status === 0 && r.stdout.startsWith("f|") ? r.stdout.trim() : undefined;
    });
    assert.equal(count, "f|100", "the marker rows as they were at T");
  });
});
