import * as assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { after, describe, it } from "node:test";
import { requireRoot } from "./localCluster";

const ROOT = path.resolve(__dirname, "..", "..");

/** What the layer needs from a checkout: the product and this layer's harness. */
const COPIED = ["assets", "components", "tests/integration", "package.json", "tsconfig.json"];

/**
 * Starts a primary and a replica from the copied checkout's harness, runs the post-step over
 * them and prints its exit status and report.
 */
const PROGRAM = `import { LocalCluster } from "./tests/integration/localCluster";
async function main() {
  const cluster = new LocalCluster({ replicas: 1 });
  try {
    await cluster.start();
    const r = cluster.verify(60);
    process.stdout.write(JSON.stringify({ status: r.status, stderr: r.stderr, report: r.report }));
  } finally {
    await cluster.destroy();
  }
}
main().catch((err) => { console.error(err); process.exit(1); });
`;

describe("a checkout anywhere", { timeout: 300_000 }, () => {
  requireRoot();
  // mkdtemp makes the parent 0700, as /root is: the postgres user cannot enter it.
  const parent = fs.mkdtempSync(path.join(os.tmpdir(), "pgc-checkout-"));
  const checkout = path.join(parent, "pg cluster");
  after(() => fs.rmSync(parent, { recursive: true, force: true }));

  it("starts nodes and passes the post-step from a path with a space under a 0700 parent", () => {
    assert.equal(fs.statSync(parent).mode & 0o777, 0o700);
    for (const entry of COPIED) {
      fs.cpSync(path.join(ROOT, entry), path.join(checkout, entry), { recursive: true });
    }
    fs.symlinkSync(path.join(ROOT, "node_modules"), path.join(checkout, "node_modules"));
    fs.writeFileSync(path.join(checkout, "run.ts"), PROGRAM);

    const run = spawnSync(process.execPath, ["--import", "tsx", "run.ts"], {
      cwd: checkout,
      encoding: "utf8",
      timeout: 240_000,
    });
    assert.equal(run.status, 0, `the copied harness failed:\n${run.stderr}`);
    const result = JSON.parse(run.stdout) as {
      status: number;
      stderr: string;
      report: { replicas: { name: string; caughtUp: boolean }[] } | null;
    };
    assert.equal(result.status, 0, result.stderr);
    assert.deepEqual(
      result.report?.replicas.map((r) => [r.name, r.caughtUp]),
      [["replica-1", true]],
    );
  });
});
