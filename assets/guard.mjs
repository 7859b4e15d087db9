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
 *   PGC_DOCKER_HOSTS  optional JSON list of the engines the nodes run on (several Docker hosts);
 *                     without it, the environment's DOCKER_HOST (the docker provider's engine)
 * Prints one JSON line: {"image", "major", "volumes": [{"volume", "major"}]} ("major" null when no
 * volume holds data yet, so nothing had to be compared).
 */
import { spawnSync } from "node:child_process";
import { dockerEnv, jsonEnv, log, requireEnv } from "./pgnode.mjs";

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
  process.stdout.write(`${JSON.stringify({ image, major, volumes })}\n`);
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
