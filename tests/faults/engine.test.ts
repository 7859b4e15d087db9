/**
 * Fault 8d, the Docker engine down: in its own file because it stops the engine every other test
 * uses, so `scripts/test.sh` runs it alone, after the rest of the fault layer (which runs beside
 * the e2e layer).
 */
import * as assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as path from "node:path";
import { after, describe, it } from "node:test";
import { accepting } from "../lib/faults";
import { newStack, waitUntil } from "../lib/stack";

const ROOT = path.resolve(__dirname, "..", "..");

describe("the Docker engine down", { timeout: 10 * 60_000 }, () => {
  const stack = newStack("fltdown", { replicas: "1" });
  after(async () => {
    await stack.remove();
  });

  it("8d. the Docker engine down: named, with the fix; after starting it the next up completes", async () => {
    spawnSync("pkill", ["-x", "dockerd"]);
    await waitUntil(
      "dockerd exited (gone, not merely unresponsive: one still shutting down would be waited for)",
      async () => spawnSync("pgrep", ["-x", "dockerd"]).status !== 0,
      60_000,
    );
    try {
      await assert.rejects(
        stack.up(),
        /Cannot connect to the Docker daemon at unix:\/\/\/var\/run\/docker\.sock/,
      );
    } finally {
      const r = spawnSync("bash", [path.join(ROOT, "scripts/provision-docker.sh")], {
        encoding: "utf8",
      });
      assert.equal(r.status, 0, r.stderr);
    }
    const { summary } = await stack.up();
    assert.ok(summary.create > 0);
    assert.ok(await accepting(`localhost:${stack.basePort}`));
  });
});
