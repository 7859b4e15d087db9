/**
 * Backups with pgBackRest (issue 12), seen through Pulumi's mocks: off by default; when on, a
 * repository volume every node mounts, the nodes' environment (archiving needs a restart, so it
 * is in the containers'), the topology step making the stanza, a backup step that reports the
 * latest backup on a mere environment change, and the version guard checking the image for
 * pgBackRest. Bad input is named before anything is created.
 */
import * as assert from "node:assert/strict";
import { describe, it } from "node:test";
import { clusterArgsFromConfig, validateClusterArgs } from "../../components";
import { BackupResult, backupWarning } from "../../components/backup";
import { PASSWORDS, configErrorOf, Recorded, build, plain, envOf, stepEnv } from "./harness";

const named = (recorded: Recorded[], name: string) =>
  recorded.find((r) => r.name === name && r.custom) as Recorded;

describe("backups (pgBackRest)", () => {
  it("are off by default: no repository, step or archiving", async () => {
    const { recorded, cluster } = await build("bk-off", { replicas: 1 });
    assert.equal(named(recorded, "bk-off-backup"), undefined);
    assert.equal(envOf(named(recorded, "bk-off-primary")).PGC_BACKUP, undefined);
    assert.equal(cluster.backup, undefined);
  });

  it("on: a repository volume in every node, archiving everywhere, a stanza, a first full backup", async () => {
    const { recorded, cluster } = await build("bk", {
      replicas: 2,
      backup: { enabled: true, retentionFull: 3, trigger: "", type: "incr", compress: "zst" },
    });
    const volume = named(recorded, "bk-backup");
    assert.equal(volume.type, "docker:index/volume:Volume");
    assert.equal(volume.inputs.name, "bk-backup");
    for (const node of ["bk-primary", "bk-replica-1", "bk-replica-2"]) {
      const c = named(recorded, node);
      const mounts = plain<{ volumeName: string; containerPath: string }[]>(c.inputs.volumes);
      assert.deepEqual(
        mounts.map((m) => [m.volumeName, m.containerPath]),
        [
          [`${node}-data`, "/var/lib/postgresql/data"],
          ["bk-backup", "/var/lib/pgbackrest"],
        ],
        node,
      );
      const env = envOf(c);
      assert.deepEqual(
        [env.PGC_BACKUP, env.PGC_STANZA, env.PGC_BACKUP_RETENTION_FULL, env.PGC_BACKUP_COMPRESS],
        ["on", "bk", "3", "zst"],
      );
    }
    assert.equal(stepEnv(named(recorded, "bk-topology")).PGC_BACKUP, "on");
    assert.equal(stepEnv(named(recorded, "bk-guard")).PGC_BACKUP, "on", "the image is checked");
    const backupStep = recorded.find(
      (r) => r.type === "command:local:Command" && r.name === "bk-backup",
    ) as Recorded;
    assert.equal(backupStep.inputs.create, "node backup.mjs");
    assert.equal(backupStep.inputs.update, "node backup.mjs info", "an env change takes none");
    assert.equal(stepEnv(backupStep).PGC_BACKUP_TYPE, "full", "the first backup is full");
    assert.equal(stepEnv(backupStep).PGC_BACKUP_TARGET, "prefer-standby", "from a standby");
    assert.deepEqual(plain(backupStep.inputs.triggers), [""]);
    assert.ok(cluster.backup, "the backup output");
  });

  it("a repository in a host directory: bound in every node, named in their env, no volume", async () => {
    const { recorded } = await build("bkp", {
      replicas: 1,
      backup: { enabled: true, repositoryPath: "/srv/pgbackrest/bkp/" },
    });
    assert.equal(
      recorded.find((r) => r.type === "docker:index/volume:Volume" && r.name === "bkp-backup"),
      undefined,
      "no repository volume",
    );
    for (const node of ["bkp-primary", "bkp-replica-1"]) {
      const c = named(recorded, node);
      const mounts = plain<Record<string, unknown>[]>(c.inputs.volumes);
      assert.deepEqual(mounts[1], {
        hostPath: "/srv/pgbackrest/bkp",
        containerPath: "/var/lib/pgbackrest",
      });
      // The roll gates see a change of place in the env.
      assert.equal(envOf(c).PGC_BACKUP_REPO_SOURCE, "/srv/pgbackrest/bkp");
    }
    const step = recorded.find(
      (r) => r.type === "command:local:Command" && r.name === "bkp-backup",
    ) as Recorded;
    assert.deepEqual(plain(step.inputs.triggers), ["", "/srv/pgbackrest/bkp"]);

    const restored = await build("rsp", {
      replicas: 0,
      restore: { repository: "/srv/pgbackrest/bkp" },
    });
    const c = named(restored.recorded, "rsp-primary");
    assert.deepEqual(plain<Record<string, unknown>[]>(c.inputs.volumes)[1], {
      hostPath: "/srv/pgbackrest/bkp",
      containerPath: "/var/lib/pgbackrest-restore",
      readOnly: true,
    });
    const message = (args: Parameters<typeof validateClusterArgs>[0]) =>
      configErrorOf(() => validateClusterArgs(args));
    for (const bad of ["relative/dir", "/", "/srv/../etc", "/a:b"]) {
      assert.match(
        message({ ...PASSWORDS, backup: { enabled: true, repositoryPath: bad } }),
        /backup\.repositoryPath = .*: must be an absolute path on the Docker host, other than \/, without \.\., : or ,\. Fix: pulumi config set backupRepositoryPath/,
        bad,
      );
    }
    assert.match(
      message({
        ...PASSWORDS,
        backup: { enabled: true, repositoryPath: "/srv/own" },
        restore: { repository: "/srv/own/" },
      }),
      /restore\.repository = "\/srv\/own\/": is this cluster's own repository/,
    );
  });

  it("warns when a standby's backup failed and the primary took it, not when the primary was the choice", () => {
    const result: BackupResult = {
      node: "c-primary",
      label: "20261127-080000F",
      type: "full",
      fromStandby: false,
      start: "2026-11-27T08:00:00.000Z",
      stop: "2026-11-27T08:00:09.000Z",
      backups: 1,
    };
    assert.equal(backupWarning({ ...result, fromStandby: true, node: "c-replica-1" }), undefined);
    assert.equal(
      backupWarning({ ...result, primaryBecause: "backup.target is primary" }),
      undefined,
    );
    assert.equal(
      backupWarning({ ...result, primaryBecause: "no standby streams from the primary now" }),
      undefined,
    );
    assert.match(
      backupWarning({
        ...result,
        primaryBecause: "the backup from c-replica-1 failed: c-replica-1: ctl.sh backup failed",
      }) ?? "",
      /^backup 20261127-080000F was taken on the primary c-primary, not on a standby, because the backup from c-replica-1 failed: .*The backup is good/,
    );
  });

  it("a new trigger takes a backup of the configured type", async () => {
    const { recorded } = await build("bkt", {
      replicas: 1,
      backup: { enabled: true, trigger: "2026-11-27", type: "incr", target: "primary" },
    });
    const step = recorded.find(
      (r) => r.type === "command:local:Command" && r.name === "bkt-backup",
    ) as Recorded;
    assert.equal(stepEnv(step).PGC_BACKUP_TYPE, "incr");
    assert.equal(stepEnv(step).PGC_BACKUP_TARGET, "primary");
    assert.deepEqual(plain(step.inputs.triggers), ["2026-11-27"]);
  });

  it("names bad input and the fix, before anything is created", () => {
    const message = (args: Parameters<typeof validateClusterArgs>[0]) =>
      configErrorOf(() => validateClusterArgs(args));
    const bad = message({
      ...PASSWORDS,
      backup: {
        enabled: true,
        retentionFull: 0,
        type: "weekly",
        trigger: "a b",
        target: "replica",
      },
    });
    assert.match(
      bad,
      /backup\.target = "replica": must be prefer-standby or primary\. Fix: pulumi config set backupTarget prefer-standby/,
    );
    assert.match(bad, /backup\.retentionFull = 0: must be between 1 and 100/);
    assert.match(
      bad,
      /backup\.type = "weekly": must be full, diff or incr\. Fix: pulumi config set backupType full/,
    );
    assert.match(bad, /backup\.trigger = "a b": must be a word/);
    assert.match(
      message({ ...PASSWORDS, backup: { enabled: true, host: "h1", port: 9000 } }),
      /backup\.host = "h1": is only for clusters with hosts .*Fix: pulumi config rm backupHost\n.*backup\.port = 9000: is only for clusters with hosts .*Fix: pulumi config rm backupPort/,
    );
    const config = (extra: Record<string, string>) => (key: string) =>
      ({ ...PASSWORDS, ...extra })[key] as string | undefined;
    const { settings } = clusterArgsFromConfig(
      config({
        backup: "true",
        backupRetentionFull: "4",
        backupTrigger: "now",
        backupType: "diff",
        backupTarget: "primary",
      }),
      "pg-cluster-dev",
    );
    assert.deepEqual(settings.backup, {
      retentionFull: 4,
      trigger: "now",
      type: "diff",
      compress: "lz4",
      target: "primary",
    });
    assert.throws(
      () =>
        clusterArgsFromConfig(config({ backup: "true", backupCompress: "xz" }), "pg-cluster-dev"),
      /backup\.compress = "xz": must be lz4, zst, gz or none\. Fix: pulumi config set backupCompress lz4/,
    );
    assert.throws(
      () => clusterArgsFromConfig(config({ backup: "yes" }), "pg-cluster-dev"),
      /backup = "yes": must be true or false\. Fix: pulumi config set backup true/,
    );
  });

  it("restore: the other repository mounted read-only, the guard first and before everything", async () => {
    const { recorded, registered, cluster } = await build("rs", {
      replicas: 1,
      restore: { repository: "src-backup", targetTime: "2026-11-26T10:15:00+01:00" },
    });
    const guard = named(recorded, "rs-guard");
    assert.deepEqual(JSON.parse(stepEnv(guard).PGC_RESTORE), {
      repository: "src-backup",
      targetTime: "2026-11-26 09:15:00.000+00",
    });
    for (const node of ["rs-primary", "rs-replica-1"]) {
      const c = named(recorded, node);
      const mounts = plain<{ volumeName: string; containerPath: string; readOnly?: boolean }[]>(
        c.inputs.volumes,
      );
      assert.deepEqual(mounts[1], {
        volumeName: "src-backup",
        containerPath: "/var/lib/pgbackrest-restore",
        readOnly: true,
      });
      assert.equal(envOf(c).PGC_RESTORE_REPO, "/var/lib/pgbackrest-restore");
    }
    // Everything the cluster makes on the engine waits for the guard: a refused restore (or
    // image) leaves no network or volume behind.
    const onEngine = registered.filter((r) => r.type.startsWith("docker:"));
    assert.ok(onEngine.length >= 4, "the network, volumes and containers");
    for (const r of onEngine) {
      assert.ok(r.dependsOn.includes(cluster.guard), `${r.name} (${r.type}) waits for the guard`);
    }
  });

  it("restore: bad input named with the fix", () => {
    const message = (args: Parameters<typeof validateClusterArgs>[0]) =>
      configErrorOf(() => validateClusterArgs(args, undefined, "pg-cluster-dev"));
    assert.match(
      message({ ...PASSWORDS, restore: { repository: "pg-cluster-dev-backup" } }),
      /restore\.repository = "pg-cluster-dev-backup": is this cluster's own repository/,
    );
    assert.match(
      message({ ...PASSWORDS, restore: { repository: "a b" } }),
      /restore\.repository = "a b": must be a Docker volume name or an absolute path/,
    );
    assert.match(
      message({ ...PASSWORDS, restore: { repository: "x", targetTime: "yesterday" } }),
      /restore\.targetTime = "yesterday": must be an ISO 8601 time with a time zone\. Fix: pulumi config set restoreTargetTime 2026-11-27T10:15:00Z/,
    );
    assert.match(
      message({ ...PASSWORDS, restore: { repository: "x", targetTime: "2026-11-27T10:15:00" } }),
      /must be an ISO 8601 time with a time zone/,
      "a time without a zone is ambiguous",
    );
    assert.match(
      message({ ...PASSWORDS, restore: { repository: "x", targetTime: "2999-01-01T00:00:00Z" } }),
      /restore\.targetTime = "2999-01-01T00:00:00Z": is in the future/,
    );
    assert.match(
      message({ ...PASSWORDS, restore: { repository: "x", targetLsn: "3000060" } }),
      /restore\.targetLsn = "3000060": must be a WAL location such as 0\/3000060 \(SELECT pg_current_wal_lsn\(\)\)\. Fix: pulumi config set restoreTargetLsn 0\/3000060/,
    );
    assert.match(
      message({
        ...PASSWORDS,
        restore: { repository: "x", targetLsn: "0/3000060", targetTime: "2026-11-26T10:15:00Z" },
      }),
      /restore\.targetLsn = "0\/3000060": cannot be given with restore\.targetTime/,
    );
    assert.match(
      message({ ...PASSWORDS, restore: { repository: "x", stanza: "no/slash" } }),
      /restore\.stanza = "no\/slash": must be a pgBackRest stanza name/,
    );
    const config = (extra: Record<string, string>) => (key: string) =>
      ({ ...PASSWORDS, ...extra })[key] as string | undefined;
    const { settings } = clusterArgsFromConfig(
      config({
        restoreRepository: "src-backup",
        restoreStanza: "src",
        restoreTargetTime: "2026-11-26T10:15:00.5Z",
      }),
      "pg-cluster-dev",
    );
    assert.deepEqual(settings.restore, {
      repository: "src-backup",
      stanza: "src",
      targetTime: "2026-11-26 10:15:00.500+00",
    });
    assert.deepEqual(
      clusterArgsFromConfig(
        config({ restoreRepository: "src-backup", restoreTargetLsn: "0/3a000f8" }),
        "pg-cluster-dev",
      ).settings.restore,
      { repository: "src-backup", targetLsn: "0/3A000F8" },
      "an LSN, upper case as pgBackRest prints them",
    );
    assert.throws(
      () =>
        clusterArgsFromConfig(
          config({ restoreTargetTime: "2026-11-27T10:15:00Z" }),
          "pg-cluster-dev",
        ),
      /restore\.repository = \(not set\): must name the repository \(a Docker volume or a host path\)/,
    );
  });
});
