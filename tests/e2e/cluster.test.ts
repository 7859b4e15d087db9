import * as assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { after, describe, it } from "node:test";
import { announceOncePerLayer, isFirstMajorPass } from "../lib/majors";
import {
  IMAGE,
  REPLICATION_PASSWORD,
  SUPERUSER_PASSWORD,
  dockerObjects,
  inspectContainer,
  newStack,
  queryAt,
  waitUntil,
} from "../lib/stack";

const MAJOR_TIMEOUT = 15 * 60_000;
/**
 * What depends on the server's major runs on every major: the bootstrap, replication, the
 * router's role checks, the destroy. The component's own logic (a no-op up, scaling, 0 replicas,
 * bad input, settings changed by a reload: ALTER SYSTEM and pg_reload_conf, alike on every
 * supported major) is the same whatever the image, so it runs on the first major only: on the
 * later ones it cost CI 2 of its 3 minutes, beside the first major's pass on 2 cores.
 */
const itFirstMajor = isFirstMajorPass() ? it : () => undefined;
if (!isFirstMajorPass()) {
  announceOncePerLayer(
    "the cluster test's component-only part (no-op, scaling, 0 replicas, bad input)",
  );
}

describe(`end to end on ${IMAGE}`, { timeout: MAJOR_TIMEOUT }, () => {
  const stack = newStack("e2e");
  const c = stack.clusterName;
  after(async () => {
    await stack.remove();
  });

  let endpoints: { primary: string; replicas: string[] };
  type Report = {
    primary: { lastUp: string };
    replicas: { name: string; state: string; caughtUp: boolean; lastUp: string }[];
    endpoints: { readWrite: string; readOnly: string };
  };
  /** What the last up did to each node, the primary first. */
  const lastUps = (r: Report) => [r.primary.lastUp, ...r.replicas.map((x) => x.lastUp)];

  it("brings up a primary and 2 replicas that serve the seeded rows and replicate a new one", async () => {
    const { outputs, summary } = await stack.up();
    // network, 3 volumes, 3 containers with a roll gate each, 2 slot steps, the router, the version
    // guard, the topology step and the post-step; with TLS (the default) the CA and a certificate
    // per node
    assert.equal(summary.create, 20);
    endpoints = {
      primary: outputs.primaryEndpoint as string,
      replicas: outputs.replicaEndpoints as string[],
    };
    assert.equal(endpoints.primary, `localhost:${stack.basePort}`);
    assert.deepEqual(endpoints.replicas, [
      `localhost:${stack.basePort + 1}`,
      `localhost:${stack.basePort + 2}`,
    ]);

    const [primary] = await queryAt<{ recovery: boolean; ro: string }>(
      endpoints.primary,
      "SELECT pg_is_in_recovery() AS recovery, current_setting('transaction_read_only') AS ro",
    );
    assert.deepEqual(primary, { recovery: false, ro: "off" });
    for (const ep of [endpoints.primary, ...endpoints.replicas]) {
      const rows = await queryAt<{ email: string }>(ep, "SELECT email FROM wizards ORDER BY id");
      assert.deepEqual(
        rows.map((r) => r.email),
        ["harry.potter@hogwarts.edu", "ron.weasley@hogwarts.edu", "hermione.granger@hogwarts.edu"],
        `Wizards on ${ep}`,
      );
    }
    for (const ep of endpoints.replicas) {
      const [r] = await queryAt<{ recovery: boolean }>(
        ep,
        "SELECT pg_is_in_recovery() AS recovery",
      );
      assert.equal(r.recovery, true, `${ep} is a standby`);
    }
    await queryAt(endpoints.primary, "INSERT INTO wizards (firstname) VALUES ('Merlin')");
    for (const ep of endpoints.replicas) {
      await waitUntil(
        `Merlin on ${ep}`,
        async () =>
          (await queryAt(ep, "SELECT 1 FROM wizards WHERE firstname = 'Merlin'")).length === 1,
        10_000,
      );
    }
    // The router: one host:port each that any client takes, leading to the right role.
    assert.equal(outputs.readWriteEndpoint, `localhost:${stack.basePort - 2}`);
    assert.equal(outputs.readOnlyEndpoint, `localhost:${stack.basePort - 1}`);
    const role = "SELECT current_setting('cluster_name') AS node, pg_is_in_recovery() AS standby";
    const [rw] = await queryAt<{ node: string; standby: boolean }>(
      outputs.readWriteEndpoint as string,
      role,
    );
    assert.deepEqual(rw, { node: `${c}-primary`, standby: false });
    const readers = new Set<string>();
    for (let i = 0; i < 4; i++) {
      const sessions: { node: string; standby: boolean }[] = await queryAt(
        outputs.readOnlyEndpoint as string,
        role,
      );
      assert.equal(sessions[0].standby, true, `read-only session ${i} landed on a standby`);
      readers.add(sessions[0].node);
    }
    assert.deepEqual([...readers].sort(), [`${c}-replica-1`, `${c}-replica-2`], "round-robin");
    const report = outputs.replicationReport as Report;
    assert.deepEqual(lastUps(report), ["created", "created", "created"]);
    assert.equal(report.endpoints.readWrite, `${c}-primary`);
    assert.match(report.endpoints.readOnly, /-replica-[12]$/);
    assert.deepEqual(
      report.replicas.map((r) => [r.name, r.state, r.caughtUp]),
      [
        [`${c}-replica-1`, "streaming", true],
        [`${c}-replica-2`, "streaming", true],
      ],
    );
    // Published on loopback only.
    const primaryInfo = await inspectContainer(`${c}-primary`);
    assert.ok(primaryInfo);
    // Passwords reach every node as a file only: not in what `docker inspect` prints, not in
    // the environment `docker exec` gives a shell, and the file is the server user's alone.
    for (const node of [`${c}-primary`, `${c}-replica-1`, `${c}-replica-2`]) {
      const env = ((await inspectContainer(node)) as unknown as { Config: { Env: string[] } })
        .Config.Env;
      const shell = execFileSync("docker", ["exec", node, "env"], { encoding: "utf8" });
      for (const [what, text] of [
        ["docker inspect", env.join("\n")],
        ["docker exec env", shell],
      ]) {
        assert.ok(
          !text.includes(SUPERUSER_PASSWORD) && !text.includes(REPLICATION_PASSWORD),
          `${node}: no password in ${what}`,
        );
        assert.doesNotMatch(text, /PASSWORD=/, `${node}: no password variable in ${what}`);
      }
      const file = execFileSync(
        "docker",
        ["exec", node, "stat", "-c", "%a %U", "/run/secrets/pg-cluster"],
        { encoding: "utf8" },
      );
      assert.equal(file.trim(), "600 postgres", `${node}: the passwords file`);
    }
  });

  itFirstMajor("a second up changes nothing and restarts nothing", async () => {
    const before = await Promise.all(
      [`${c}-primary`, `${c}-replica-1`, `${c}-replica-2`].map(inspectContainer),
    );
    const preview = await stack.preview();
    assert.deepEqual(preview.summary, { create: 0, update: 0, replace: 0, delete: 0, same: 20 });
    const { summary } = await stack.up();
    assert.deepEqual(summary, { create: 0, update: 0, replace: 0, delete: 0, same: 20 });
    const afterUp = await Promise.all(
      [`${c}-primary`, `${c}-replica-1`, `${c}-replica-2`].map(inspectContainer),
    );
    for (const [i, info] of afterUp.entries()) {
      assert.equal(info?.Id, before[i]?.Id);
      assert.equal(info?.State.StartedAt, before[i]?.State.StartedAt);
      assert.equal(info?.RestartCount, 0);
    }
  });

  itFirstMajor(
    "changes maxWalSize and maxSlotWalKeepSize by a reload: no container replaced or restarted",
    async () => {
      const names = [`${c}-primary`, `${c}-replica-1`, `${c}-replica-2`];
      const before = await Promise.all(names.map(inspectContainer));
      const serverStart = (i: number) =>
        queryAt<{ t: string }>(
          `localhost:${stack.basePort + i}`,
          "SELECT pg_postmaster_start_time()::text AS t",
        ).then((rows) => rows[0].t);
      const startedBefore = await Promise.all(names.map((_, i) => serverStart(i)));
      const { summary, outputs } = await stack.up({
        maxWalSize: "2GB",
        maxSlotWalKeepSize: "512MB",
      });
      assert.equal(summary.replace ?? 0, 0, "nothing replaced");
      assert.deepEqual(lastUps(outputs.replicationReport as Report), [
        "reloaded",
        "reloaded",
        "reloaded",
      ]);
      const afterUp = await Promise.all(names.map(inspectContainer));
      for (const [i, info] of afterUp.entries()) {
        assert.equal(info?.Id, before[i]?.Id, `${names[i]} kept`);
        assert.equal(
          info?.State.StartedAt,
          before[i]?.State.StartedAt,
          `${names[i]} not restarted`,
        );
        const [r] = await queryAt<{ wal: string; keep: string }>(
          `localhost:${stack.basePort + i}`,
          "SELECT current_setting('max_wal_size') AS wal, current_setting('max_slot_wal_keep_size') AS keep",
        );
        assert.deepEqual([r.wal, r.keep], ["2GB", "512MB"], `settings on ${names[i]}`);
        assert.equal(await serverStart(i), startedBefore[i], `${names[i]}'s server not restarted`);
      }
      // Back to the base config, the same way (the later tests expect it).
      const back = await stack.up();
      assert.equal(back.summary.replace ?? 0, 0, "nothing replaced on the way back");
    },
  );

  itFirstMajor("scales 2 -> 3 without touching the primary or the existing replicas", async () => {
    const names = [`${c}-primary`, `${c}-replica-1`, `${c}-replica-2`];
    const before = await Promise.all(names.map(inspectContainer));
    const { summary, outputs } = await stack.up({ replicas: "3" });
    assert.equal(
      summary.create,
      5,
      "slot step, roll gate, volume, container and certificate of replica 3",
    );
    assert.equal(
      summary.replace,
      3,
      "the router (its config lists every node); the topology step and the post-step re-run",
    );
    assert.equal(
      summary.update,
      5,
      "the existing slot steps and roll gates learn the new node list (the gates record it, not run)",
    );
    assert.equal(summary.delete, 0);
    const afterUp = await Promise.all(names.map(inspectContainer));
    for (const [i, info] of afterUp.entries()) {
      assert.equal(info?.Id, before[i]?.Id, `${names[i]} kept`);
      assert.equal(info?.State.StartedAt, before[i]?.State.StartedAt, `${names[i]} not restarted`);
    }
    const senders = await queryAt<{ application_name: string; state: string }>(
      `localhost:${stack.basePort}`,
      "SELECT application_name, state FROM pg_stat_replication WHERE application_name NOT LIKE '%-control' ORDER BY application_name",
    );
    assert.deepEqual(senders, [
      { application_name: `${c}-replica-1`, state: "streaming" },
      { application_name: `${c}-replica-2`, state: "streaming" },
      { application_name: `${c}-replica-3`, state: "streaming" },
    ]);
    const rows = await queryAt(
      `localhost:${stack.basePort + 3}`,
      "SELECT 1 FROM wizards WHERE firstname = 'Merlin'",
    );
    assert.equal(rows.length, 1);
    assert.equal((outputs.replicaEndpoints as string[]).length, 3);
    assert.deepEqual(lastUps(outputs.replicationReport as Report), [
      "nothing",
      "nothing",
      "nothing",
      "created",
    ]);
  });

  // 3 -> 0 in one up (a partial scale-down, 3 -> 1, is the hosts layer's, with its TLS roll).
  itFirstMajor(
    "scales 3 -> 0: removed replicas' containers, volumes and slots are gone; the primary serves alone",
    async () => {
      const { summary, outputs } = await stack.up({ replicas: "0" });
      // per removed replica: its container, volume, slot step, roll gate and certificate
      assert.equal(summary.delete, 15);
      assert.deepEqual(outputs.replicaEndpoints, []);
      const objects = await dockerObjects(c);
      assert.deepEqual(objects.containers, [`${c}-primary`, `${c}-router`]);
      assert.deepEqual(objects.volumes, [`${c}-primary-data`]);
      // No standby: the read-only endpoint falls back to the primary.
      const [ro] = await queryAt<{ standby: boolean }>(
        outputs.readOnlyEndpoint as string,
        "SELECT pg_is_in_recovery() AS standby",
      );
      assert.equal(ro.standby, false);
      const [w] = await queryAt<{ n: string }>(
        `localhost:${stack.basePort}`,
        "SELECT count(*) AS n FROM wizards",
      );
      assert.equal(Number(w.n), 4);
      const slots = await queryAt(
        `localhost:${stack.basePort}`,
        "SELECT slot_name FROM pg_replication_slots",
      );
      assert.equal(slots.length, 0);
    },
  );

  itFirstMajor("fails on invalid config with our error, and changes nothing", async () => {
    const before = await dockerObjects(c);
    await assert.rejects(
      stack.up({ replicas: "-1" }),
      /pg-cluster configuration is invalid \(1 problem\); nothing was created or changed:\s+- replicas = -1: must be between 0 and 16/,
    );
    // A new stack's bad input (nothing created at all) is tests/faults/badInput.test.ts's 8a.
    assert.deepEqual(await dockerObjects(c), before);
  });

  it("destroy leaves no container, volume or network of the stack", async () => {
    await stack.destroy();
    assert.deepEqual(await dockerObjects(c), { containers: [], volumes: [], networks: [] });
  });
});
