// @ts-check
/**
 * Delete-time step of a replica node: drops its physical replication slot wherever it is (on the
 * primary, and on any standby that kept it from a time it was the primary) once the node's
 * container is gone, so no node keeps retaining WAL for it.
 * Usage: node slot.mjs drop   (env: PGC_NODES, PGC_SLOT_NAME, PGC_SUPERUSER[_PASSWORD], PGC_DATABASE)
 */
import { connect, jsonEnv, log, requireEnv, sleep } from "./pgnode.mjs";

const DROP_TIMEOUT_MS = 30_000;

/** @param {import("./pgnode.mjs").NodeAddress} node @param {string} slot */
async function dropOn(node, slot) {
  const deadline = Date.now() + DROP_TIMEOUT_MS;
  let client;
  try {
    // One attempt: on a destroy the other nodes' containers may be gone already, and a slot
    // left on a node that is down is dropped by the next up's topology step (stale slots).
    client = await connect(node, Date.now());
  } catch (err) {
    // The node is gone or stopped: nothing retains WAL for the slot while it is down, and
    // max_slot_wal_keep_size bounds what it can ever pin. Do not block the removal on it.
    log(
      `WARNING: slot ${slot} not checked on ${node.name} (${String(err)}). If it comes back, run on it: SELECT pg_drop_replication_slot('${slot}');`,
    );
    return;
  }
  try {
    for (;;) {
      const { rows } = await client.query(
        "SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1",
        [slot],
      );
      if (rows.length === 0) return;
      try {
        if (rows[0].active_pid !== null) {
          // The replica's walsender may outlive its container by a moment.
          await client.query("SELECT pg_terminate_backend($1)", [rows[0].active_pid]);
        }
        await client.query("SELECT pg_drop_replication_slot($1)", [slot]);
        log(`dropped replication slot ${slot} on ${node.name}`);
        return;
      } catch (err) {
        if (Date.now() >= deadline) throw err;
        await sleep(200);
      }
    }
  } finally {
    await client.end();
  }
}

async function drop() {
  /** @type {import("./pgnode.mjs").NodeAddress[]} */
  const nodes = jsonEnv("PGC_NODES");
  const slot = requireEnv("PGC_SLOT_NAME");
  // The node that used the slot is gone already; the others may each hold it.
  await Promise.all(nodes.filter((n) => n.slot !== slot).map((n) => dropOn(n, slot)));
}

const action = process.argv[2];
if (action !== "drop") {
  log(`usage: node slot.mjs drop (got ${JSON.stringify(action)})`);
  process.exit(2);
}
drop().catch((err) => {
  log(`ERROR: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
});
