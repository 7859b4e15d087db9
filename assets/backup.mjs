// @ts-check
/**
 * The backup step (issue 12, docs/design/backups.md): a pgBackRest backup of the cluster, by the
 * nodes' `ctl.sh` (pgBackRest in the node's container, the repository on the volume every node
 * mounts). It runs when the cluster is made and at each new `backup.trigger`.
 *
 * Where: with `backup.target` prefer-standby (the default) and TLS, on a standby that streams
 * from the primary (an asynchronous one first, then the one that replayed most): pgBackRest there
 * copies the standby's files and runs pg_backup_start/stop on the primary through the primary's
 * pgBackRest TLS server, started for this backup only (`ctl.sh backup-serve`, for that standby's
 * certificate and this stanza). On the primary otherwise, and when the backup from the standby
 * fails (the result says why).
 *
 * Across several hosts (PGC_REPOSITORY) pgBackRest backs up only where the repository is: in the
 * repository's container (repository.sh backup), which reads the primary, and the standby when
 * there is one, through their pgBackRest servers (`ctl.sh backup-serve`, each for the repository's
 * certificate, published on its host); the same choice of standby, the same fallback.
 *
 * Environment: PGC_NODES, PGC_SUPERUSER, PGC_SUPERUSER_PASSWORD, PGC_DATABASE (as topology.mjs),
 *   PGC_TLS_CA with TLS, PGC_BACKUP_TYPE (full, diff or incr), PGC_BACKUP_TARGET
 *   (prefer-standby or primary), PGC_CTL (tests); across hosts PGC_REPOSITORY, {"name",
 *   "dockerHost"?, "servers": {"<node>": {"host", "port"}}}: the repository's container and
 *   engine, and where it reaches each node's backup server.
 * `node backup.mjs info` reports the repository's latest backup without taking one (the step's
 * update).
 * Prints one JSON line, components/backup.ts's BackupResult.
 */
import { isoFromSeconds, jsonEnv, log, requireEnv } from "./pgnode.mjs";
import {
  ctl,
  internalPort,
  lsnBytes,
  query,
  repositoryCtl,
  sqlState,
  writableNode,
} from "./roles.mjs";

/** @typedef {import("./roles.mjs").TopologyNode} TopologyNode */
/** @typedef {import("../components/backup").BackupResult} BackupResult */

async function main() {
  /** @type {TopologyNode[]} */
  const nodes = jsonEnv("PGC_NODES");
  const primary = await writableNode(nodes);
  if (!primary) {
    throw new Error(
      "no node is writable, so no backup was taken; run pulumi up again once the cluster has a primary.",
    );
  }
  /** @type {Repository | undefined} */
  const repository = process.env.PGC_REPOSITORY ? jsonEnv("PGC_REPOSITORY") : undefined;
  if (process.argv[2] === "info") {
    const info = repository
      ? await repositoryCtl(repository, "info")
      : await ctl(primary, "backup-info");
    report(info, primary, undefined);
    return;
  }
  const type = requireEnv("PGC_BACKUP_TYPE");
  const target = process.env.PGC_BACKUP_TARGET ?? "prefer-standby";
  let reason;
  if (target === "primary") {
    reason = "backup.target is primary";
  } else if (!process.env.PGC_TLS_CA) {
    reason = "TLS is off: pgBackRest reaches the primary from a standby only through TLS";
  } else {
    const standby = await backupStandby(nodes, primary);
    if (!standby) {
      reason = "no standby streams from the primary now";
    } else {
      try {
        const result = repository
          ? await throughRepository(repository, type, [primary, standby])
          : await fromStandby(primary, standby, type);
        report(result, standby, undefined);
        return;
      } catch (err) {
        reason = `the backup from ${standby.name} failed: ${err instanceof Error ? err.message : String(err)}`;
        log(`${reason}; taking it on the primary instead`);
      }
    }
  }
  const result = repository
    ? await throughRepository(repository, type, [primary])
    : await ctl(primary, "backup", type);
  report(result, primary, reason);
}

/** @typedef {import("../components/backupRepository").RepositoryAccess} Repository */

/**
 * A backup taken in the repository's container of `nodes` (the primary, then the standby to read
 * from, if any), each reached through its pgBackRest server while the backup runs.
 * @param {Repository} repository @param {string} type @param {TopologyNode[]} nodes
 */
async function throughRepository(repository, type, nodes) {
  const served = [];
  try {
    const args = [];
    for (const node of nodes) {
      const { backupServer: server } = await ctl(node, "backup-serve", repository.name);
      served.push(node);
      const at = repository.servers[node.name];
      if (!at) throw new Error(`PGC_REPOSITORY has no server address for ${node.name}`);
      args.push(at.host, String(at.port), String(server.pgPort), server.pgPath, server.socketDir);
    }
    return await repositoryCtl(repository, "backup", type, ...args);
  } finally {
    for (const node of served) {
      await ctl(node, "backup-serve-stop").catch((err) => log(`backup-serve-stop: ${err}`));
    }
  }
}

/**
 * The standby to back up from: one that streams from the primary now, an asynchronous one before
 * a synchronous one (its reads would slow the commits that wait for it), then the one that
 * replayed the most.
 * @param {TopologyNode[]} nodes @param {TopologyNode} primary
 * @returns {Promise<TopologyNode | undefined>}
 */
async function backupStandby(nodes, primary) {
  const states = await Promise.all(
    nodes.filter((n) => n !== primary).map(async (n) => ({ n, s: await sqlState(n) })),
  );
  const replication = /** @type {{ name: string, sync: string }[]} */ (
    await query(
      primary,
      "SELECT application_name AS name, sync_state AS sync FROM pg_stat_replication",
    )
  );
  const synchronous = new Set(
    replication.filter((r) => r.sync === "sync" || r.sync === "quorum").map((r) => r.name),
  );
  const streaming = new Set(replication.map((r) => r.name));
  const candidates = states.filter(
    ({ n, s }) => s?.inRecovery && s.receiver?.status === "streaming" && streaming.has(n.name),
  );
  candidates.sort(
    (a, b) =>
      Number(synchronous.has(a.n.name)) - Number(synchronous.has(b.n.name)) ||
      Number(lsnBytes(b.s?.replayLsn ?? "0/0") - lsnBytes(a.s?.replayLsn ?? "0/0")),
  );
  return candidates[0]?.n;
}

/**
 * A backup from `standby`, the primary reached through its pgBackRest server while it runs.
 * @param {TopologyNode} primary @param {TopologyNode} standby @param {string} type
 */
async function fromStandby(primary, standby, type) {
  const { backupServer: server } = await ctl(primary, "backup-serve", standby.name);
  try {
    return await ctl(
      standby,
      "backup",
      type,
      primary.internalHost,
      String(server.port),
      String(internalPort(primary)),
      server.pgPath,
      server.socketDir,
    );
  } finally {
    await ctl(primary, "backup-serve-stop").catch((err) => log(`backup-serve-stop: ${err}`));
  }
}

/**
 * Prints the repository's latest backup, as `ctl.sh backup`/`backup-info` on `node` reported it.
 * @param {any} result @param {TopologyNode} node @param {string | undefined} reason
 */
function report(result, node, reason) {
  const [stanza] = result.info ?? [];
  const last = stanza?.backup?.at(-1);
  if (!last) throw new Error(`pgbackrest info on ${node.name} shows no backup`);
  /** @type {BackupResult} */
  const out = {
    node: node.name,
    label: last.label,
    type: last.type,
    fromStandby: (result.standbyLabels ?? []).includes(last.label),
    ...(reason === undefined ? {} : { primaryBecause: reason }),
    start: isoFromSeconds(last.timestamp.start),
    stop: isoFromSeconds(last.timestamp.stop),
    sizeBytes: last.info?.size,
    repoSizeBytes: last.info?.repository?.size,
    walStart: last.archive?.start,
    walStop: last.archive?.stop,
    backups: stanza.backup.length,
  };
  process.stdout.write(`${JSON.stringify(out)}\n`);
}

main().catch((err) => {
  log(`ERROR: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
});
