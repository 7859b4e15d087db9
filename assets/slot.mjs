// @ts-check
/**
 * Delete-time step of a replica: drops its physical replication slot on the primary once the
 * replica's container is gone, so the primary stops retaining WAL for it.
 * Usage: node slot.mjs drop   (env: PGC_PRIMARY, PGC_SLOT_NAME, PGC_SUPERUSER[_PASSWORD], PGC_DATABASE)
 */
import { connect, jsonEnv, log, requireEnv, sleep } from "./pgnode.mjs";

const DROP_TIMEOUT_MS = 30_000;

async function drop() {
  const primary = jsonEnv("PGC_PRIMARY");
  const slot = requireEnv("PGC_SLOT_NAME");
  const deadline = Date.now() + DROP_TIMEOUT_MS;
  let client;
  try {
    client = await connect(primary, Date.now() + 10_000);
  } catch (err) {
    // The primary is gone or stopped: nothing retains WAL for the slot while it is down, and
    // max_slot_wal_keep_size bounds what it can ever pin. Do not block the removal on it.
    log(
      `WARNING: slot ${slot} not dropped (${String(err)}). If the primary comes back, run on it: SELECT pg_drop_replication_slot('${slot}');`,
    );
    return;
  }
  try {
    for (;;) {
      const { rows } = await client.query(
        "SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1",
        [slot],
      );
      if (rows.length === 0) {
        log(`slot ${slot} is absent on the primary; nothing to drop`);
        return;
      }
      try {
        if (rows[0].active_pid !== null) {
          // The replica's walsender may outlive its container by a moment.
          await client.query("SELECT pg_terminate_backend($1)", [rows[0].active_pid]);
        }
        await client.query("SELECT pg_drop_replication_slot($1)", [slot]);
        log(`dropped replication slot ${slot} on the primary`);
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

const action = process.argv[2];
if (action !== "drop") {
  log(`usage: node slot.mjs drop (got ${JSON.stringify(action)})`);
  process.exit(2);
}
drop().catch((err) => {
  log(`ERROR: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
});
