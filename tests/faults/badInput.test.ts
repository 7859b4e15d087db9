/**
 * Bad input and a broken environment (the fault layer, its own file so it runs beside the
 * others): malformed config named with its fix and nothing created, an image that does not
 * exist, a host port already in use; each time the next up completes without cleanup.
 */
import * as assert from "node:assert/strict";
import * as net from "node:net";
import { after, describe, it } from "node:test";
import { accepting, dockerCli } from "../lib/faults";
import { IMAGE, dockerObjects, newStack } from "../lib/stack";

describe("bad input and a broken environment", { timeout: 10 * 60_000 }, () => {
  const stack = newStack("fltenv", { replicas: "1" });
  after(async () => {
    await stack.remove();
  });

  it("8a. malformed config values: each named with its fix, nothing created", async () => {
    // Each up is a whole engine run (~4 s): values that can be wrong together go in one up, whose
    // one error must name every one of them.
    const table: [Record<string, string>, RegExp[]][] = [
      // Pulumi checks the types declared in Pulumi.yaml before the program runs, with its own words.
      [{ replicas: "x" }, [/configuration key 'replicas' must be of type 'integer'/]],
      [{ replicas: "1.5" }, [/configuration key 'replicas' must be of type 'integer'/]],
      [
        {
          replicas: "17",
          primaryPort: "70000",
          bindAddress: "0.0.0.0.0",
          database: "My DB",
          maxSlotWalKeepSize: "-1",
          superuserPassword: "",
          image: "bad image",
        },
        [
          /replicas = 17: must be between 0 and 16\. Fix: /,
          /primaryPort = 70000: must be between 1 and 65535\. Fix: /,
          /bindAddress = "0\.0\.0\.0\.0": is not an IP address\. Fix: /,
          /database = "My DB": must be a lower-case SQL identifier/,
          /maxSlotWalKeepSize = "-1": must be a positive size with a unit/,
          /superuserPassword = \(empty\): must not be empty\. Fix: pulumi config set --secret superuserPassword/,
          /image = "bad image": is not a Docker image reference\. Fix: /,
        ],
      ],
      [
        { replicaBasePort: String(stack.basePort), synchronousReplicas: "2" },
        [
          /primaryPort = \d+: the primary and replica 1 would both publish host port/,
          /synchronousReplicas = 2: must be between 0 and 1\. Fix: /,
        ],
      ],
    ];
    for (const [bad, messages] of table) {
      await assert.rejects(
        stack.up(bad),
        (err: Error) => {
          for (const m of messages) assert.match(err.message, m);
          return true;
        },
        JSON.stringify(bad),
      );
    }
    const { summary } = await stack.preview();
    // network, 2 volumes, 2 containers with a roll gate each, the router, the version guard, the
    // slot step, the topology step and the post-step; the CA and a certificate per node (TLS)
    assert.equal(summary.create, 15, "nothing was created by the rejected runs");
    assert.deepEqual(await dockerObjects(stack.clusterName), {
      containers: [],
      volumes: [],
      networks: [],
    });
  });

  it("8b. an image that does not exist: named, with the fix; the next up completes without cleanup", async () => {
    await assert.rejects(stack.up({ image: "pg-cluster-postgres:99" }), /pg-cluster-postgres:99/);
    const { summary } = await stack.up();
    assert.ok(summary.create > 0);
    assert.ok(await accepting(`localhost:${stack.basePort + 1}`));
  });

  it("8c. a host port already in use: named, with the fix; after freeing it the next up completes", async () => {
    await stack.destroy();
    // Holds the port; a connection to it (the first roll gate checks every node's port) is
    // closed at once, so close() below does not wait on it.
    const blocker = net
      .createServer((socket) => socket.destroy())
      .listen(stack.basePort + 1, "127.0.0.1");
    await new Promise((r) => blocker.once("listening", r));
    try {
      await assert.rejects(
        stack.up(),
        new RegExp(
          `127\\.0\\.0\\.1:${stack.basePort + 1}.*(port is already allocated|address already in use)`,
          "s",
        ),
      );
    } finally {
      await new Promise((r) => blocker.close(r));
    }
    const { summary } = await stack.up();
    // Pulumi replaces the container whose start failed (and re-runs the steps after it); nothing
    // that worked is touched.
    assert.equal(summary.delete, 0);
    assert.ok(summary.replace <= 4, JSON.stringify(summary));
    assert.ok(await accepting(`localhost:${stack.basePort + 1}`));
  });

  it("8e. an image of another PostgreSQL major: refused within seconds naming both majors, no container replaced", async (t) => {
    const names = ["primary", "replica-1"].map((n) => `${stack.clusterName}-${n}`);
    const ids = () => names.map((n) => dockerCli("inspect", "-f", "{{.Id}}", n));
    const before = ids();
    const [major, other] = IMAGE.endsWith(":15") ? ["15", "17"] : ["17", "15"];
    const t0 = Date.now();
    await assert.rejects(stack.up({ image: `pg-cluster-postgres:${other}` }), (err: Error) => {
      assert.match(
        err.message,
        new RegExp(
          `image pg-cluster-postgres:${other} runs PostgreSQL ${other}, but the data in .*-primary-data.* was written by PostgreSQL ${major}; nothing was changed \\(no container was replaced\\)`,
        ),
      );
      assert.match(err.message, /pg_upgrade/);
      return true;
    });
    const seconds = (Date.now() - t0) / 1000;
    assert.deepEqual(ids(), before, "no container was replaced");
    // With the image set back, there is nothing to do.
    await stack.expectNoChanges();
    t.diagnostic(`refused after ${seconds.toFixed(1)} s (the whole failed up)`);
  });
});
