/**
 * Recovery from data loss: a replica whose slot was invalidated re-clones itself, and a lost
 * primary is replaced by the most advanced replica. A file of its own so that it runs beside the
 * other fault files (scripts/test.sh).
 */
import * as assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { dockerCli, streaming, tableDigest, waitCaughtUp, writeWal } from "../lib/faults";
import { newStack, queryAt, waitUntil } from "../lib/stack";

describe("a replica that falls behind max_slot_wal_keep_size", { timeout: 10 * 60_000 }, () => {
  const stack = newStack("fltlost", {
    replicas: "1",
    maxWalSize: "128MB",
    maxSlotWalKeepSize: "128MB",
  });
  const c = stack.clusterName;
  const primary = `localhost:${stack.basePort}`;
  const replica = `localhost:${stack.basePort + 1}`;
  before(async () => {
    await stack.up();
  });
  after(async () => {
    await stack.remove();
  });

  it("2b. re-clones itself automatically, with zero rows missing, and the report says it did", async (t) => {
    dockerCli("stop", `${c}-replica-1`);
    const rows = await writeWal(primary, "load_lost", 640);
    await queryAt(primary, "CHECKPOINT");
    const [slot] = await queryAt<{ wal_status: string }>(
      primary,
      "SELECT wal_status FROM pg_replication_slots WHERE slot_name = 'replica_1'",
    );
    assert.equal(slot.wal_status, "lost", "the primary invalidated the slot");
    const t0 = Date.now();
    dockerCli("start", `${c}-replica-1`);
    await waitUntil(
      "replica streaming after re-clone",
      async () => (await streaming(primary)).includes(`${c}-replica-1`),
      300_000,
    );
    await waitCaughtUp(primary, [replica]);
    const recovered = Date.now() - t0;
    assert.deepEqual(
      await tableDigest(replica, "load_lost", "payload"),
      await tableDigest(primary, "load_lost", "payload"),
    );
    // Any change to the post-step's inputs re-runs it (as `pulumi up --replace` on it would).
    const { outputs } = await stack.up({ verifyTimeoutSeconds: "121" });
    const report = outputs.replicationReport as {
      replicas: { clones: number; lastCloneReason: string; slotWalStatus: string }[];
    };
    assert.equal(report.replicas[0].clones, 2);
    assert.equal(report.replicas[0].lastCloneReason, "slot lost");
    assert.equal(report.replicas[0].slotWalStatus, "reserved");
    t.diagnostic(
      `slot lost: re-cloned and caught up ${recovered} ms after start; ${rows} rows compared`,
    );
  });
});

describe("a lost primary", { timeout: 10 * 60_000 }, () => {
  const stack = newStack("fltgone");
  const c = stack.clusterName;
  const nodes = [0, 1, 2].map((i) => `localhost:${stack.basePort + i}`);
  after(async () => {
    await stack.remove();
  });

  it("10. its container and volume removed: the up refuses, naming the most advanced replica; set as primary, it serves every row read-write and node 0 is rebuilt as its standby", async (t) => {
    await stack.up();
    await queryAt(nodes[0], "CREATE TABLE gone AS SELECT g AS id FROM generate_series(1, 1000) g");
    await waitCaughtUp(nodes[0], nodes.slice(1));
    dockerCli("rm", "-f", `${c}-primary`);
    dockerCli("volume", "rm", `${c}-primary-data`);

    let suggested = "";
    // With --refresh, as `npm run up` runs when Docker differs from the state: the engine then
    // sees the container and volume gone and makes them again, empty.
    await assert.rejects(stack.up({}, { refresh: true }), (err: Error) => {
      const m =
        /the primary \S+-primary has an empty data volume, but .* hold this cluster.*Nothing was changed and no database was created.*pulumi config set primary (\S+), then pulumi up/s.exec(
          err.message,
        );
      assert.ok(m, err.message.slice(-3000));
      suggested = m[1];
      return true;
    });
    assert.match(suggested, /-replica-[12]$/);
    // No initdb happened on the recreated, empty node 0.
    const status = JSON.parse(
      dockerCli("exec", `${c}-primary`, "bash", "/opt/pg-cluster/ctl.sh", "status"),
    ) as { volume: string };
    assert.equal(status.volume, "empty", "node 0's new volume holds no database");

    const { outputs } = await stack.up({ primary: suggested });
    const rw = outputs.readWriteEndpoint as string;
    const [r] = await queryAt<{ n: string; node: string; standby: boolean }>(
      rw,
      "SELECT count(*) AS n, current_setting('cluster_name') AS node, pg_is_in_recovery() AS standby FROM gone",
    );
    assert.deepEqual([Number(r.n), r.node, r.standby], [1000, suggested, false]);
    await queryAt(rw, "INSERT INTO gone VALUES (1001)");
    // Node 0 was re-cloned from the new primary and streams from it.
    await waitUntil(
      "node 0 replays the new row",
      async () => {
        const [x] = await queryAt<{ n: string; standby: boolean }>(
          nodes[0],
          "SELECT count(*) AS n, pg_is_in_recovery() AS standby FROM gone",
        );
        return Number(x.n) === 1001 && x.standby;
      },
      60_000,
    );
    const report = outputs.replicationReport as {
      primary: { name: string };
      replicas: { name: string; caughtUp: boolean; lastUp?: string }[];
    };
    assert.equal(report.primary.name, suggested);
    const node0 = report.replicas.find((x) => x.name === `${c}-primary`);
    assert.equal(node0?.caughtUp, true);
    assert.equal(node0?.lastUp, "created");
    t.diagnostic(`the up named ${suggested}; promoted, and node 0 rebuilt as its standby`);
  });
});
