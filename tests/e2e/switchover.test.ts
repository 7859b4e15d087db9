/**
 * The primary is a role chosen by config (issue 9): planned switchovers under a writer that records
 * every acknowledged id, and a refused switchover that changes nothing. Clients of the router's
 * endpoints (node-postgres and psql of libpq 15) follow each switchover: the read-write ones to
 * the new primary, the read-only ones never onto a primary. The stack has backups on (issue 12):
 * the first backup is taken at creation, from a standby (pgBackRest reaches the primary through
 * its TLS server), WAL archiving follows the primary role to each new primary with no step, a
 * new backupTrigger takes a backup from a standby of whichever node is primary then,
 * and destroy keeps the repository. A new stack restored from that repository to a time T has
 * every write acknowledged before T and a table dropped after it; a missing repository or a T
 * (or an LSN) before the first backup is refused before anything is created.
 */
import * as assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { after, describe, it } from "node:test";
import { BackupResult } from "../../components/backup";
import { ArchiverReport, archiverWarning } from "../../components/replicationCheck";
import { containerLogs } from "../lib/docker";
import { announceOncePerLayer, isFirstMajorPass } from "../lib/majors";
import { RoleProbe } from "../lib/roleProbe";
import { dockerApi } from "../lib/docker";
import {
  IMAGE,
  SUPERUSER_PASSWORD,
  dockerObjects,
  inspectContainer,
  newStack,
  queryAt,
  waitUntil,
} from "../lib/stack";
import { AckWriter } from "../lib/writer";

const ROOT = path.resolve(__dirname, "..", "..");

if (!isFirstMajorPass()) announceOncePerLayer("the switchover test");
else
  describe("the primary is a role chosen by config", { timeout: 900_000 }, () => {
    // Its repository in a directory of the Docker host (this machine), not a volume.
    const repository = fs.mkdtempSync(path.join(os.tmpdir(), "pgc-e2esw-repo-"));
    const stack = newStack("e2esw", { backup: "true", backupRepositoryPath: repository });
    const c = stack.clusterName;
    const names = [`${c}-primary`, `${c}-replica-1`, `${c}-replica-2`];
    const endpoints = [0, 1, 2].map((i) => `localhost:${stack.basePort + i}`);
    const readWrite = `localhost:${stack.basePort - 2}`;
    const readOnly = `localhost:${stack.basePort - 1}`;
    after(async () => {
      await stack.remove();
      fs.rmSync(repository, { recursive: true, force: true });
    });

    /** A WAL switch on `endpoint` (the primary), then until the segment is archived there. */
    async function archivedFrom(endpoint: string): Promise<string> {
      const [{ wal }] = await queryAt<{ wal: string }>(
        endpoint,
        "SELECT pg_walfile_name(pg_switch_wal()) AS wal",
      );
      await waitUntil(
        `${wal} archived from ${endpoint}`,
        async () => {
          const [r] = await queryAt<{ last: string | null; failed: string }>(
            endpoint,
            "SELECT last_archived_wal AS last, failed_count AS failed FROM pg_stat_archiver",
          );
          return r.last !== null && r.last >= wal;
        },
        30_000,
      );
      return wal;
    }

    // A new stack restored from this one's repository (below), with backups of its own: a stanza
    // in its own repository (a volume), never the source's.
    const restored = newStack("e2erst", {
      replicas: "1",
      backup: "true",
      restoreRepository: repository,
    });
    after(async () => {
      await restored.remove();
      await dockerApi("DELETE", `/volumes/${restored.clusterName}-backup`);
    });

    const routerLog = () => containerLogs(`${c}-router`);
    // Every id a writer had acknowledged, over every round: a restore to later has them all.
    const acknowledged: number[] = [];
    const containerIds = async () =>
      Promise.all(names.map(async (n) => (await inspectContainer(n))?.Id));

    /** Every acknowledged id on every node; each node in the role asked; no inactive slot. */
    async function checkCluster(primary: string, acked: number[]): Promise<void> {
      for (const [i, name] of names.entries()) {
        const [r] = await queryAt<{ standby: boolean }>(
          endpoints[i],
          "SELECT pg_is_in_recovery() AS standby",
        );
        assert.equal(
          r.standby,
          name !== primary,
          `${name} is ${name === primary ? "the primary" : "a standby"}`,
        );
        const deadline = Date.now() + 10_000;
        let missing: number[] = [];
        do {
          const rows = await queryAt<{ id: number }>(endpoints[i], "SELECT id FROM acked");
          const have = new Set(rows.map((x) => x.id));
          missing = acked.filter((id) => !have.has(id));
          if (missing.length === 0) break;
          await new Promise((res) => setTimeout(res, 100));
        } while (Date.now() < deadline);
        assert.deepEqual(missing, [], `acknowledged ids missing on ${name}`);
        const slots = await queryAt<{ slot_name: string }>(
          endpoints[i],
          "SELECT slot_name FROM pg_replication_slots WHERE NOT active",
        );
        assert.deepEqual(slots, [], `no inactive slot on ${name}`);
      }
    }

    it("moves the primary to replica-1 under writes, losing no acknowledged commit and replacing no container", async (t) => {
      const first = await stack.up();
      const backup = first.outputs.backup as BackupResult;
      assert.deepEqual(
        [backup.type, backup.backups, backup.fromStandby, backup.primaryBecause],
        ["full", 1, true, undefined],
        "a full backup when the cluster is made, read from a standby",
      );
      assert.ok(names.slice(1).includes(backup.node), `taken on a standby: ${backup.node}`);
      await archivedFrom(endpoints[0]);
      await queryAt(endpoints[0], "CREATE TABLE acked (id int PRIMARY KEY)");
      const before = await containerIds();

      // Synchronous (the commits wait for a standby through the switchover). One round: the way
      // back and an asynchronous switchover under a writer are the hosts layer's and the roll
      // test's (each up here costs CI about 30 s of two busy cores).
      const [target, sync] = [names[1], "1"];
      const writer = new AckWriter({
        endpoints,
        password: SUPERUSER_PASSWORD,
        table: "acked",
        firstId: 1,
      });
      // A writer as an application writes: through the router's read-write endpoint only.
      const routed = new AckWriter({
        endpoints: [readWrite],
        password: SUPERUSER_PASSWORD,
        table: "acked",
        firstId: 500_000,
      });
      const probes = {
        "node-postgres read-only": new RoleProbe({
          endpoint: readOnly,
          password: SUPERUSER_PASSWORD,
          client: "node-postgres",
        }),
        "psql read-only": new RoleProbe({
          endpoint: readOnly,
          password: SUPERUSER_PASSWORD,
          client: "psql",
        }),
        "node-postgres read-write": new RoleProbe({
          endpoint: readWrite,
          password: SUPERUSER_PASSWORD,
          client: "node-postgres",
        }),
        "psql read-write": new RoleProbe({
          endpoint: readWrite,
          password: SUPERUSER_PASSWORD,
          client: "psql",
        }),
      };
      writer.start();
      routed.start();
      for (const p of Object.values(probes)) p.start();
      // Stopped however the round ends: a running client would keep the test process alive.
      t.after(() => Promise.all([writer, routed, ...Object.values(probes)].map((x) => x.stop())));
      await new Promise((r) => setTimeout(r, 500));
      const upStart = Date.now();
      const { outputs } = await stack.up({ primary: target, synchronousReplicas: sync });
      const upDone = Date.now();
      await new Promise((r) => setTimeout(r, 1500));
      await Promise.all([writer.stop(), routed.stop()]);
      await Promise.all(Object.values(probes).map((p) => p.stop()));
      process.stderr.write(
        `switchover to ${target} (sync ${sync}): ${writer.acked.length} acknowledged, longest gap ${writer.longestGapMs()} ms; through the router: ${routed.acked.length} acknowledged, longest gap ${routed.longestGapMs()} ms\n`,
      );
      assert.ok(writer.acked.length > 10, "the writer wrote before and after");
      assert.ok(
        routed.acked.length > 10 && routed.ackTimes[routed.ackTimes.length - 1] > upDone,
        "the router's writer wrote before and after",
      );
      for (const [what, probe] of Object.entries(probes)) {
        const answers = probe.answers();
        const readOnlyClient = what.endsWith("read-only");
        process.stderr.write(
          `  ${what}: ${answers.length} answers, ${probe.observations.length - answers.length} errors, longest silence ${probe.longestSilenceMs()} ms\n`,
        );
        // Two standbys stay up throughout (the one not chosen, then the old primary too).
        const wrong = answers.filter((a) => a.standby !== readOnlyClient);
        assert.deepEqual(
          wrong.map((a) => a.node),
          [],
          `${what} client reached only ${readOnlyClient ? "standbys" : "the primary"} (wrong answers at ${wrong.map((a) => a.t - upStart).join(", ")} ms after the up started; up took ${upDone - upStart} ms); the router's log:\n${routerLog()}`,
        );
        // A new session per query: the candidate is drained first and another standby
        // serves, so none of them fails (a long-lived session on the candidate is ended).
        if (what === "psql read-only") {
          assert.deepEqual(
            probe.observations
              .filter((o) => o.error)
              .map((o) => `+${o.t - upStart} ms: ${o.error}`),
            [],
            `${what} client: no failed query; the router's log:\n${routerLog()}`,
          );
        }
        const last = answers[answers.length - 1];
        assert.ok(last && last.t > upDone, `${what} client answered after the switchover`);
        if (!readOnlyClient) assert.equal(last.node, target, `${what} client is on ${target}`);
      }
      assert.equal(outputs.primaryEndpoint, endpoints[names.indexOf(target)]);
      const nodes = outputs.nodes as { name: string; role: string }[];
      assert.deepEqual(
        nodes.map((n) => [n.name, n.role]),
        names.map((n) => [n, n === target ? "primary" : "replica"]),
      );
      const report = outputs.replicationReport as {
        primary: { name: string };
        replicas: { name: string; caughtUp: boolean; clones?: number }[];
      };
      assert.equal(report.primary.name, target);
      for (const r of report.replicas) {
        assert.equal(r.caughtUp, true, `${r.name} caught up`);
        // node 0 never cloned (it ran initdb); replicas cloned once, at creation
        assert.equal(r.clones ?? 0, r.name === names[0] ? 0 : 1, `${r.name} was not re-cloned`);
      }
      await checkCluster(target, [...writer.acked, ...routed.acked]);
      acknowledged.push(...writer.acked, ...routed.acked);
      assert.deepEqual(await containerIds(), before, "no container was replaced");
      // Archiving went with the role: the new primary's WAL reaches the repository.
      await archivedFrom(endpoints[names.indexOf(target)]);
      await stack.expectNoChanges({ primary: names[1], synchronousReplicas: "1" });
    });

    it("refuses a switchover to a replica whose replay is paused, and changes nothing", async () => {
      await queryAt(endpoints[2], "SELECT pg_wal_replay_pause()");
      try {
        await assert.rejects(
          stack.up({ primary: names[2], synchronousReplicas: "1" }),
          (err: Error) => {
            assert.match(err.message, /switchover to .*replica-2 refused, nothing changed/);
            assert.match(err.message, /WAL replay is paused/);
            return true;
          },
        );
        const [r] = await queryAt<{ standby: boolean }>(
          endpoints[1],
          "SELECT pg_is_in_recovery() AS standby",
        );
        assert.equal(r.standby, false, "the primary is still the primary");
      } finally {
        await queryAt(endpoints[2], "SELECT pg_wal_replay_resume()");
      }
      // With replay running again, the same change goes through; a new backupTrigger in the same
      // up takes a backup after the switchover, on the primary of the moment.
      const { outputs } = await stack.up({
        primary: names[2],
        synchronousReplicas: "1",
        backupTrigger: "second",
        backupType: "incr",
      });
      assert.equal(outputs.primaryEndpoint, endpoints[2]);
      const backup = outputs.backup as BackupResult;
      assert.deepEqual(
        [backup.type, backup.backups, backup.fromStandby],
        ["incr", 2, true],
        "from a standby of the new primary",
      );
      assert.notEqual(backup.node, names[2]);
    });

    it("restores a new stack from the repository to a time T: every write acknowledged before T, a table dropped after T; bad restores create nothing", async (t) => {
      // The backup the last up took ended before T (pgBackRest picks by whole seconds).
      await new Promise((r) => setTimeout(r, 1100));
      await queryAt(
        endpoints[2],
        "CREATE TABLE marker AS SELECT g AS id FROM generate_series(1, 100) g",
      );
      const [{ at }] = await queryAt<{ at: string }>(
        endpoints[2],
        `SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS at`,
      );
      await new Promise((r) => setTimeout(r, 1100));
      await queryAt(endpoints[2], "DROP TABLE marker");
      await archivedFrom(endpoints[2]);

      const rc = restored.clusterName;
      // Refused by the guard, the stack's first resource: nothing on the engine.
      await assert.rejects(
        restored.up({ restoreRepository: `${c}-no-such-backup` }),
        /restore\.repository: there is no Docker volume/,
      );
      const left = await dockerObjects(rc);
      assert.deepEqual(
        [left.containers, left.volumes, left.networks],
        [[], [], []],
        "a refused restore creates nothing",
      );

      // More refusals of that guard, run alone as the step runs it (an up each would cost ~8 s).
      for (const [restore, message] of [
        [
          { repository, targetTime: "2020-01-01 00:00:00.000+00" },
          /restore\.targetTime: 2020-01-01T00:00:00\.000Z is before the end of the first backup/,
        ],
        [
          { repository, targetLsn: "0/1" },
          /restore\.targetLsn: 0\/1 is before the end of the first backup in stanza .* \(0\/[0-9A-F]+\)/,
        ],
        [
          { repository: `${repository}-gone` },
          /restore\.repository: there is no directory .*-gone/,
        ],
      ] as const) {
        const run = spawnSync("node", ["guard.mjs"], {
          cwd: path.join(ROOT, "assets"),
          encoding: "utf8",
          env: {
            ...process.env,
            PGC_IMAGE: IMAGE,
            PGC_CLUSTER: rc,
            PGC_RESTORE: JSON.stringify(restore),
          },
        });
        assert.notEqual(run.status, 0, run.stdout);
        assert.match(run.stderr, message);
      }

      const t0 = Date.now();
      const { outputs } = await restored.up({ restoreTargetTime: at });
      t.diagnostic(`restored stack (1 + 1) up to ${at}: ${Date.now() - t0} ms`);
      const report = outputs.replicationReport as { replicas: { caughtUp: boolean }[] };
      assert.equal(report.replicas.length, 1);
      assert.ok(
        report.replicas.every((r) => r.caughtUp),
        "the replica cloned the restored primary",
      );
      const primary = `localhost:${restored.basePort}`;
      const [{ n }] = await queryAt<{ n: string }>(primary, "SELECT count(*) AS n FROM marker");
      assert.equal(n, "100", "the table as it was at T");
      const rows = await queryAt<{ id: number }>(primary, "SELECT id FROM acked");
      const have = new Set(rows.map((r) => r.id));
      assert.deepEqual(
        acknowledged.filter((id) => !have.has(id)),
        [],
        "every write acknowledged before T",
      );
      const mount = (await inspectContainer(`${rc}-primary`))?.Mounts.find(
        (m) => m.Source === repository,
      );
      assert.equal(mount?.RW, false, "the source repository is mounted read-only");
      const own = outputs.backup as BackupResult;
      assert.deepEqual(
        [own.node, own.type, own.backups, own.fromStandby],
        [`${rc}-replica-1`, "full", 1, true],
      );
      const archiver = (outputs.replicationReport as { archiver?: { failing: boolean } }).archiver;
      assert.equal(archiver?.failing, false, "the report has the archiver: working");
    });

    it("a repository that cannot be written for a while: writes go on, the report says archiving fails, then it catches up", async (t) => {
      const rc = restored.clusterName;
      const primary = `localhost:${restored.basePort}`;
      const repo = "/var/lib/pgbackrest";
      const exec = (...cmd: string[]) =>
        execFileSync("docker", ["exec", "-u", "0", `${rc}-primary`, ...cmd], { encoding: "utf8" });
      const mode = exec("stat", "-c", "%a", repo).trim();
      const report = () => {
        const run = spawnSync("node", ["verify.mjs"], {
          cwd: path.join(ROOT, "assets"),
          encoding: "utf8",
          env: { ...process.env, ...restored.checkEnvironment(), PGC_BACKUP: "on" },
        });
        assert.equal(run.status, 0, run.stderr);
        return (JSON.parse(run.stdout) as { archiver: ArchiverReport }).archiver;
      };
      await queryAt(primary, "CREATE TABLE outage (id int PRIMARY KEY)");
      const writer = new AckWriter({
        endpoints: [primary],
        password: SUPERUSER_PASSWORD,
        table: "outage",
      });
      writer.start();
      t.after(() => writer.stop());
      exec("chmod", "000", repo);
      try {
        for (let i = 0; i < 3; i++) {
          await new Promise((r) => setTimeout(r, 300));
          await queryAt(primary, "SELECT pg_switch_wal()");
        }
        await waitUntil(
          "archive_command to fail",
          async () => {
            const [a] = await queryAt<{ failed: string }>(
              primary,
              "SELECT failed_count AS failed FROM pg_stat_archiver",
            );
            return Number(a.failed) > 0;
          },
          60_000,
        );
        const failing = report();
        t.diagnostic(`while the repository is unwritable: ${JSON.stringify(failing)}`);
        assert.equal(failing.failing, true);
        assert.ok(failing.pendingSegments >= 1, "WAL waits in pg_wal");
        assert.match(
          archiverWarning(`${rc}-primary`, failing),
          /WAL archiving from .* is failing: \d+ failed attempts/,
        );
      } finally {
        exec("chmod", mode, repo);
      }
      const t0 = Date.now();
      await waitUntil(
        "archiving to catch up",
        async () => {
          const [a] = await queryAt<{ pending: number }>(
            primary,
            "SELECT count(*)::int AS pending FROM pg_ls_dir('pg_wal/archive_status') f WHERE f LIKE '%.ready'",
          );
          return a.pending === 0;
        },
        90_000,
      );
      t.diagnostic(
        `archiving caught up ${Date.now() - t0} ms after the repository was writable again`,
      );
      await writer.stop();
      const after = report();
      assert.equal(after.failing, false, JSON.stringify(after));
      assert.equal(after.pendingSegments, 0);
      assert.ok(writer.acked.length > 0, "the primary took writes throughout");
      const rows = await queryAt<{ id: number }>(primary, "SELECT id FROM outage");
      const have = new Set(rows.map((r) => r.id));
      assert.deepEqual(
        writer.acked.filter((id) => !have.has(id)),
        [],
        "no acknowledged write lost",
      );
      await restored.destroy();
    });

    it("destroy keeps the backup repository", async () => {
      await stack.destroy();
      const left = await dockerObjects(c);
      assert.deepEqual(left.containers, [], "destroy removed the nodes");
      assert.ok(
        fs.existsSync(path.join(repository, "backup", c, "backup.info")),
        "the backup repository outlives the cluster",
      );
      const volume = await dockerApi("GET", `/volumes/${c}-backup`);
      assert.equal(volume.status, 404, "and it was a host directory, not a volume");
    });
  });
