// @ts-check
/**
 * The cluster's major-version guard: runs before any node container is created or replaced with
 * a (new) image, and fails, changing nothing, when that image's PostgreSQL major differs from the
 * one that wrote a node's data (`PG_VERSION` in its volume). A server cannot start on another
 * major's data directory, so an image swap across majors would only take every node down.
 *
 * Environment (set by the PostgresCluster component):
 *   PGC_IMAGE    the nodes' image
 *   PGC_CLUSTER  the cluster's name: its volumes carry the label pg-cluster.cluster=<name>
 *   PGC_BACKUP   "on" with backups: the image must have pgBackRest (on every engine)
 *   PGC_RESTORE  optional {"repository", "stanza"?, "targetTime"?, "targetLsn"?}: while no
 *                volume holds data, the repository (a volume, or a host path) must exist and
 *                hold (in that stanza, or its only one) a backup of the image's major that ended
 *                before the target
 *   PGC_DOCKER_HOSTS  optional JSON list of the engines the nodes run on (several Docker hosts);
 *                     without it, the environment's DOCKER_HOST (the docker provider's engine)
 * Prints one JSON line: {"image", "major", "volumes": [{"volume", "major"}], "restore"?: {"repository",
 * "stanza", "backup", "backupStop"}} ("major" null when no volume holds data yet, so nothing had to
 * be compared; "restore" when a restore was checked).
 */
import { spawnSync } from "node:child_process";
import { dockerEnv, isoFromSeconds, jsonEnv, log, requireEnv } from "./pgnode.mjs";
import { lsnBytes } from "./roles.mjs";

/**
 * The docker CLI against `engine` (undefined: the environment's DOCKER_HOST).
 * @param {string | undefined} engine @param {string[]} args @param {number} [timeoutMs]
 */
function docker(engine, args, timeoutMs = 60_000) {
  const r = spawnSync("docker", args, {
    encoding: "utf8",
    env: dockerEnv(engine),
    timeout: timeoutMs,
  });
  if (r.error) throw new Error(`docker ${args[0]}: ${r.error.message}`);
  return { ok: r.status === 0, out: r.stdout.trim(), err: r.stderr.trim() };
}

/**
 * bash -c `script` (with `args`) in a throw-away container of `image` on `engine`, without
 * network, with `mounts` (docker run's -v arguments).
 * @param {string | undefined} engine @param {string} image @param {string} script
 * @param {string[]} [mounts] @param {string[]} [args]
 */
function runInImage(engine, image, script, mounts = [], args = []) {
  return docker(engine, [
    "run",
    "--rm",
    "--network",
    "none",
    "--entrypoint",
    "bash",
    ...mounts,
    image,
    "-c",
    script,
    "_",
    ...args,
  ]);
}

/** The last line of a docker error, which says what went wrong. @param {string} text */
const lastLine = (text) => text.split("\n").filter(Boolean).pop() ?? "";

function main() {
  const image = requireEnv("PGC_IMAGE");
  const cluster = requireEnv("PGC_CLUSTER");
  /** @type {(string | undefined)[]} */
  const engines = process.env.PGC_DOCKER_HOSTS ? jsonEnv("PGC_DOCKER_HOSTS") : [undefined];
  const results = engines.map((engine) => check(image, cluster, engine));
  if (process.env.PGC_BACKUP === "on") {
    for (const engine of engines) requirePgBackRest(image, engine);
  }
  const major = results.find((r) => r.major !== null)?.major ?? null;
  const volumes = results.flatMap((r) => r.volumes);
  if (major !== null) {
    log(`image ${image} runs PostgreSQL ${major}, as the data in every volume does`);
  }
  // A restore is for a new cluster: once a volume holds data, the repository is not read again.
  const restore =
    process.env.PGC_RESTORE && major === null
      ? checkRestore(
          image,
          jsonEnv("PGC_RESTORE"),
          process.env.PGC_RESTORE_DOCKER_HOST ?? engines[0],
        )
      : undefined;
  process.stdout.write(`${JSON.stringify({ image, major, volumes, restore })}\n`);
}

/**
 * The restore's repository on `engine`: the volume exists, holds the stanza (or exactly one),
 * with a backup written by the image's major that ended before the target time. Read by
 * pgBackRest in a throw-away container of the image, the volume mounted read-only.
 * @param {string} image
 * @param {{ repository: string, stanza?: string, targetTime?: string, targetLsn?: string }} restore
 * @param {string | undefined} engine
 */
function checkRestore(image, restore, engine) {
  const where = `the Docker engine ${engine ?? "of DOCKER_HOST"}`;
  const none = "Nothing was created.";
  const isPath = restore.repository.startsWith("/");
  if (!isPath && !docker(engine, ["volume", "inspect", restore.repository]).ok) {
    throw new Error(
      `restore.repository: there is no Docker volume ${restore.repository} on ${where}. ${none} Fix: name the repository volume of the cluster to restore (docker volume ls --filter label=pg-cluster.backup-of), or pulumi config rm restoreRepository.`,
    );
  }
  const script =
    "postgres --version && pgbackrest --repo1-path=/pgc/restore --lock-path=/tmp --log-level-file=off --log-level-console=off --log-level-stderr=error --output=json info";
  // --mount, unlike -v, refuses a host path that does not exist instead of creating it.
  const mount = isPath
    ? ["--mount", `type=bind,source=${restore.repository},target=/pgc/restore,readonly`]
    : ["-v", `${restore.repository}:/pgc/restore:ro`];
  const run = runInImage(engine, image, script, mount);
  if (isPath && !run.ok && /bind source path does not exist/.test(run.err)) {
    throw new Error(
      `restore.repository: there is no directory ${restore.repository} on ${where}'s host. ${none} Fix: give the backup.repositoryPath of the cluster to restore, or pulumi config rm restoreRepository.`,
    );
  }
  const [version, json] = run.out.split("\n", 2);
  const major = /\(PostgreSQL\) (\d+)/.exec(version ?? "")?.[1];
  /** @type {{ name: string, status: { code: number, message: string }, db: { version: string }[], backup: { label: string, timestamp: { stop: number }, lsn?: { stop: string } }[] }[]} */
  let stanzas;
  try {
    stanzas = JSON.parse(json ?? "");
  } catch {
    throw new Error(
      `restore.repository: pgBackRest cannot read ${isPath ? "directory" : "volume"} ${restore.repository} with image ${image} (${lastLine(run.err) || run.out}). ${none} Fix: name a pgBackRest repository, and use an image with pgBackRest.`,
    );
  }
  const names = stanzas.map((x) => x.name);
  const stanza = restore.stanza
    ? stanzas.find((x) => x.name === restore.stanza)
    : stanzas.length === 1
      ? stanzas[0]
      : undefined;
  if (!stanza) {
    throw new Error(
      restore.stanza || names.length === 0
        ? `restore.stanza: repository ${restore.repository} holds ${names.length ? `stanzas ${names.join(", ")}, not ${restore.stanza}` : "no stanza (no backup was ever made in it)"}. ${none} Fix: ${names.length ? `pulumi config set restoreStanza ${names[0]}` : "name the repository of a cluster that took a backup"}.`
        : `restore.stanza: repository ${restore.repository} holds stanzas ${names.join(", ")}; say which. ${none} Fix: pulumi config set restoreStanza ${names[0]}.`,
    );
  }
  const backups = stanza.backup ?? [];
  if (backups.length === 0) {
    throw new Error(
      `restore.repository: stanza ${stanza.name} in ${restore.repository} holds no backup (${stanza.status?.message}). ${none} Fix: take a backup of that cluster first (pulumi config set backupTrigger <a new word>, then pulumi up there).`,
    );
  }
  const wrote = stanza.db?.at(-1)?.version;
  if (major && wrote && wrote !== major) {
    throw new Error(
      `restore: stanza ${stanza.name} holds backups of PostgreSQL ${wrote}, but image ${image} runs PostgreSQL ${major}. ${none} Fix: pulumi config set image <a PostgreSQL ${wrote} image>.`,
    );
  }
  let chosen = backups.at(-1);
  if (restore.targetLsn) {
    const target = lsnBytes(restore.targetLsn);
    const before = backups.filter((b) => b.lsn && lsnBytes(b.lsn.stop) <= target);
    if (before.length === 0) {
      const first = backups[0].lsn?.stop;
      throw new Error(
        `restore.targetLsn: ${restore.targetLsn} is before the end of the first backup in stanza ${stanza.name} (${first}), the earliest location it can restore to. ${none} Fix: pulumi config set restoreTargetLsn ${first} (or later), or pulumi config rm restoreTargetLsn for the end of the archive.`,
      );
    }
    chosen = before.at(-1);
  }
  if (restore.targetTime) {
    const target = Date.parse(restore.targetTime.replace(" ", "T").replace(/\+00$/, "Z"));
    const before = backups.filter((b) => b.timestamp.stop * 1000 <= target);
    if (before.length === 0) {
      throw new Error(
        `restore.targetTime: ${new Date(target).toISOString()} is before the end of the first backup in stanza ${stanza.name} (${isoFromSeconds(backups[0].timestamp.stop)}), the earliest time it can restore to. ${none} Fix: pulumi config set restoreTargetTime ${isoFromSeconds(backups[0].timestamp.stop)} (or later), or pulumi config rm restoreTargetTime for the end of the archive.`,
      );
    }
    chosen = before.at(-1);
  }
  log(
    `restore from ${restore.repository}, stanza ${stanza.name}: backup ${chosen?.label}, then WAL to ${restore.targetTime ?? restore.targetLsn ?? "the end of the archive"}`,
  );
  return {
    repository: restore.repository,
    stanza: stanza.name,
    backup: chosen?.label ?? "",
    backupStop: isoFromSeconds(chosen?.timestamp.stop ?? 0),
  };
}

/**
 * The image's major and every volume's on `engine`; throws naming both majors when a volume's
 * differs. @param {string} image @param {string} cluster @param {string | undefined} engine
 * @returns {{ major: string | null, volumes: { volume: string, major: string | null }[] }}
 */
function check(image, cluster, engine) {
  const volumes = docker(engine, [
    "volume",
    "ls",
    "-q",
    "--filter",
    `label=pg-cluster.cluster=${cluster}`,
  ])
    .out.split("\n")
    .filter(Boolean);
  if (volumes.length === 0) return { major: null, volumes: [] };
  if (!docker(engine, ["image", "inspect", image]).ok) {
    log(`image ${image} is not on the Docker engine ${engine ?? "of DOCKER_HOST"}: pulling it`);
    const pull = docker(engine, ["pull", image], 300_000);
    if (!pull.ok) {
      throw new Error(
        `image ${image} is not on the Docker engine ${engine ?? "of DOCKER_HOST"} and cannot be pulled (${lastLine(pull.err)}); nothing was changed. Fix: pulumi config set image <an image this engine has or can pull>, e.g. the one the cluster runs now.`,
      );
    }
  }
  // One container reads the server's version and every volume's PG_VERSION (read-only mounts).
  const mounts = volumes.flatMap((v, i) => ["-v", `${v}:/pgc/${i}:ro`]);
  const script =
    'postgres --version; for i in "$@"; do printf "%s %s\\n" "$i" "$(cat /pgc/$i/pgdata/PG_VERSION 2>/dev/null)"; done';
  const run = runInImage(
    engine,
    image,
    script,
    mounts,
    volumes.map((_, i) => String(i)),
  );
  const major = /\(PostgreSQL\) (\d+)/.exec(run.out)?.[1];
  if (!run.ok || !major) {
    throw new Error(
      `cannot read the PostgreSQL version of image ${image} (docker run: ${lastLine(run.err) || run.out}); nothing was changed. Fix: use an image that meets the image contract in README.md (postgres on PATH, bash).`,
    );
  }
  const found = run.out
    .split("\n")
    .slice(1)
    .map((line) => line.split(" "))
    .map(([i, v]) => ({ volume: volumes[Number(i)], major: v || null }));
  const other = found.filter((f) => f.major !== null && f.major !== major);
  if (other.length > 0) {
    const was = [...new Set(other.map((f) => f.major))].join(", ");
    throw new Error(
      `image ${image} runs PostgreSQL ${major}, but the data in ${other.map((f) => f.volume).join(", ")} was written by PostgreSQL ${was}; nothing was changed (no container was replaced). A server cannot run on another major's data directory, so a major upgrade is not an image swap. Fix: set the image back to a PostgreSQL ${was} image (pulumi config set image <it>); to move to ${major}, upgrade with pg_upgrade into new volumes, or bring up a new cluster on ${major} and move the data by logical replication or pg_dump/pg_restore.`,
    );
  }
  return { major, volumes: found };
}

/**
 * With backups, the nodes archive with pgBackRest: an image without it would fail every
 * archive_command and fill pg_wal. @param {string} image @param {string | undefined} engine
 */
function requirePgBackRest(image, engine) {
  const run = runInImage(engine, image, "pgbackrest version");
  if (!run.ok || !/^pgBackRest \d/.test(run.out)) {
    throw new Error(
      `backup is on, but image ${image} has no pgBackRest (${lastLine(run.err) || run.out || "pgbackrest version failed"}); nothing was changed. Fix: use an image with pgBackRest (the local pg-cluster-postgres images have it; for the official postgres image, a derived image that runs apt-get install pgbackrest), or pulumi config set backup false.`,
    );
  }
  log(`image ${image} has ${run.out}`);
}

try {
  main();
} catch (err) {
  log(`ERROR: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
}
