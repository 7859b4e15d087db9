// @ts-check
/**
 * The backup step (issue 12, docs/design/backups.md): a pgBackRest backup of the cluster from the
 * node that is writable now, by its `ctl.sh backup TYPE` (pgBackRest in the node's container,
 * the repository on the volume every node mounts). It runs when the cluster is made and at each
 * new `backup.trigger`.
 *
 * Environment: PGC_NODES, PGC_SUPERUSER, PGC_SUPERUSER_PASSWORD, PGC_DATABASE (as topology.mjs),
 *   PGC_TLS_CA with TLS, PGC_BACKUP_TYPE (full, diff or incr), PGC_CTL (tests).
 * `node backup.mjs info` takes none: it reports the repository's latest backup (the step's update).
 * Prints one JSON line: {"node", "label", "type", "start", "stop", "sizeBytes", "repoSizeBytes",
 *   "walStart", "walStop", "backups"} (times ISO 8601; backups: how many the repository holds).
 */
import { isoFromSeconds, jsonEnv, log, requireEnv } from "./pgnode.mjs";
import { ctl, writableNode } from "./roles.mjs";

/** @typedef {import("./roles.mjs").TopologyNode} TopologyNode */

async function main() {
  /** @type {TopologyNode[]} */
  const nodes = jsonEnv("PGC_NODES");
  const type = requireEnv("PGC_BACKUP_TYPE");
  const primary = await writableNode(nodes);
  if (!primary) {
    throw new Error(
      "no node is writable, so no backup was taken; run pulumi up again once the cluster has a primary.",
    );
  }
  const result =
    process.argv[2] === "info"
      ? await ctl(primary, "backup-info")
      : await ctl(primary, "backup", type);
  const [stanza] = result.info ?? [];
  const last = stanza?.backup?.at(-1);
  if (!last) throw new Error(`pgbackrest info on ${primary.name} shows no backup`);
  process.stdout.write(
    `${JSON.stringify({
      node: primary.name,
      label: last.label,
      type: last.type,
      start: isoFromSeconds(last.timestamp.start),
      stop: isoFromSeconds(last.timestamp.stop),
      sizeBytes: last.info?.size,
      repoSizeBytes: last.info?.repository?.size,
      walStart: last.archive?.start,
      walStop: last.archive?.stop,
      backups: stanza.backup.length,
    })}\n`,
  );
}

main().catch((err) => {
  log(`ERROR: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
});
