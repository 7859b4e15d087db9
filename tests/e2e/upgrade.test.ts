/**
 * Existing stacks upgrade in place: a stack made by the previous release (its program as shipped
 * in tests/fixtures/release-v0.1.0.tar.gz, or a git ref named by PG_CLUSTER_UPGRADE_FROM) is
 * brought up, written to, and then brought up by this checkout's code. No volume may be replaced
 * or deleted, every row must still be on every node, no replica may clone again,
 * and the nodes keep their roles. Containers are replaced when what runs in them changed (this
 * release's one entrypoint does): each once, one after another; the roll gates do not wait for a
 * standby to stream from a primary of a release without ctl.sh (it is not set up for the new
 * standbys), and the topology step converges the cluster after the last container.
 * Proven to fail when a volume's inputs change (a label did, during this release's work).
 * PG_CLUSTER_UPGRADE_CONFIG adds stack config to both (JSON), e.g. {"backup":"true"}.
 */
import * as assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { after, describe, it } from "node:test";
import { EngineEvent, LocalWorkspace, Stack } from "@pulumi/pulumi/automation";
import pg from "pg";
import { ROUTER_IMAGE, announceOncePerLayer, isFirstMajorPass } from "../lib/majors";
import { sslFor, trustStackCa } from "../lib/clientTls";
import { claimPortBlock } from "../lib/ports";

const ROOT = path.resolve(__dirname, "..", "..");
/**
 * The previous release: the last state of main that passed CI before this one's changes (commit
 * 2d998de, tagged v0.1.0), as a file in the repository: CI's fresh clone has no tags (a tag
 * lookup failed there), so a git ref cannot be relied on. PG_CLUSTER_UPGRADE_FROM names a ref
 * to upgrade from instead.
 */
const UPGRADE_FROM = process.env.PG_CLUSTER_UPGRADE_FROM;
const RELEASE = path.join(ROOT, "tests", "fixtures", "release-v0.1.0.tar.gz");
const FROM_LABEL = UPGRADE_FROM ?? "v0.1.0";
const IMAGE = process.env.PG_CLUSTER_E2E_IMAGE ?? "pg-cluster-postgres:15";
const PASSWORD = "upgrade-Su-pw-51d0";

/** The previous release's program in `dir`, with this checkout's node_modules if the lock is the same. */
function checkoutPrevious(dir: string): void {
  fs.mkdirSync(dir, { recursive: true });
  if (UPGRADE_FROM) {
    const archive = spawnSync("git", ["-C", ROOT, "archive", `${UPGRADE_FROM}^{commit}`], {
      maxBuffer: 1 << 30,
    });
    assert.equal(archive.status, 0, `git archive ${UPGRADE_FROM}: ${archive.stderr}`);
    execFileSync("tar", ["-x", "-C", dir], { input: archive.stdout });
  } else {
    execFileSync("tar", ["-xzf", RELEASE, "-C", dir]);
  }
  const sameLock =
    fs.readFileSync(path.join(dir, "package-lock.json"), "utf8") ===
    fs.readFileSync(path.join(ROOT, "package-lock.json"), "utf8");
  if (sameLock) {
    fs.symlinkSync(path.join(ROOT, "node_modules"), path.join(dir, "node_modules"));
  } else {
    execFileSync("npm", ["ci", "--ignore-scripts", "--no-audit", "--no-fund"], { cwd: dir });
  }
}

/** Steps on Docker containers and volumes, by operation. */
function dockerSteps(): { steps: string[]; onEvent: (e: EngineEvent) => void } {
  const steps: string[] = [];
  return {
    steps,
    onEvent: (e) => {
      const m = e.resourcePreEvent?.metadata;
      if (!m || !/^docker:index\/(container|volume):/.test(m.type)) return;
      // With the properties that differ: a failing assertion then says why it was planned.
      const diffs = m.diffs?.length ? ` (${m.diffs.join(", ")})` : "";
      if (m.op !== "same") steps.push(`${m.op} ${m.urn.split("::").pop()}${diffs}`);
    },
  };
}

async function countOn(port: number): Promise<number> {
  const c = new pg.Client({
    host: "localhost",
    port,
    user: "postgres",
    password: PASSWORD,
    database: "mydb",
    ssl: sslFor(`localhost:${port}`),
  });
  await c.connect();
  try {
    return Number((await c.query("SELECT count(*) AS n FROM upgrade_rows")).rows[0].n);
  } finally {
    await c.end();
  }
}

if (!isFirstMajorPass()) announceOncePerLayer("the upgrade-in-place test");
else
  describe(`upgrade in place from ${FROM_LABEL}`, { timeout: 600_000 }, () => {
    const work = fs.mkdtempSync(path.join(os.tmpdir(), "pgc-upgrade-"));
    const previous = path.join(work, "previous release");
    const backend = path.join(work, "state");
    const stackName = `e2eup${process.pid % 10000}${Math.floor(Math.random() * 100)}`;
    const basePort = claimPortBlock() + 60;
    const config = {
      image: { value: IMAGE },
      replicas: { value: "2" },
      primaryPort: { value: String(basePort) },
      replicaBasePort: { value: String(basePort + 1) },
      superuserPassword: { value: PASSWORD, secret: true },
      replicationPassword: { value: "upgrade-Repl-pw-0c2e", secret: true },
      // PG_CLUSTER_UPGRADE_CONFIG: more stack config for both releases, e.g. {"backup":"true"}.
      ...Object.fromEntries(
        Object.entries(
          JSON.parse(process.env.PG_CLUSTER_UPGRADE_CONFIG ?? "{}") as Record<string, string>,
        ).map(([k, v]) => [k, { value: v }]),
      ),
    };
    const envVars = {
      PULUMI_BACKEND_URL: `file://${backend}`,
      PULUMI_CONFIG_PASSPHRASE: "upgrade-passphrase",
    };
    let current: Stack | undefined;
    let old: Stack | undefined;

    after(async () => {
      try {
        await (current ?? old)?.destroy();
        await (current ?? old)?.workspace.removeStack(stackName);
      } finally {
        // With backups (PG_CLUSTER_UPGRADE_CONFIG), destroy keeps the repository volume.
        spawnSync("docker", ["volume", "rm", "-f", `pg-cluster-${stackName}-backup`]);
        fs.rmSync(path.join(ROOT, `Pulumi.${stackName}.yaml`), { force: true });
        fs.rmSync(work, { recursive: true, force: true });
      }
    });

    it("keeps every volume, row, clone and role when the new code takes over the stack", async () => {
      checkoutPrevious(previous);
      fs.mkdirSync(backend);
      old = await LocalWorkspace.createOrSelectStack({ stackName, workDir: previous }, { envVars });
      await old.setAllConfig(config);
      // A release with the router needs its image to be one this engine has, as the new code does.
      if (fs.existsSync(path.join(previous, "components", "router.ts"))) {
        await old.setConfig("routerImage", { value: ROUTER_IMAGE });
      }
      const oldUp = await old.up();
      // A release with TLS on by default (PG_CLUSTER_UPGRADE_FROM after v0.1.0): its CA.
      trustStackCa(
        basePort - 3,
        basePort + 96,
        oldUp.outputs.caCertificate?.value as string | undefined,
      );

      const c = new pg.Client({
        host: "localhost",
        port: basePort,
        user: "postgres",
        password: PASSWORD,
        database: "mydb",
        ssl: sslFor(`localhost:${basePort}`),
      });
      await c.connect();
      await c.query("CREATE TABLE upgrade_rows AS SELECT g AS id FROM generate_series(1, 1000) g");
      await c.end();
      const ids = (names: string[]) =>
        names.map((n) => execFileSync("docker", ["inspect", "-f", "{{.Id}}", n]).toString().trim());
      const nodes = ["primary", "replica-1", "replica-2"].map(
        (n) => `pg-cluster-${stackName}-${n}`,
      );
      const before = ids(nodes);

      fs.copyFileSync(
        path.join(previous, `Pulumi.${stackName}.yaml`),
        path.join(ROOT, `Pulumi.${stackName}.yaml`),
      );
      current = await LocalWorkspace.createOrSelectStack({ stackName, workDir: ROOT }, { envVars });
      // New in this release: the router, whose image must be one this engine has.
      await current.setConfig("routerImage", { value: ROUTER_IMAGE });
      const planned = dockerSteps();
      await current.preview({ onEvent: planned.onEvent });
      const volumeSteps = (steps: string[]) => steps.filter((x) => /-data( |$)/.test(x));
      assert.deepEqual(volumeSteps(planned.steps), [], "the plan touches no volume");
      const applied = dockerSteps();
      const up = await current.up({ onEvent: applied.onEvent });
      assert.deepEqual(volumeSteps(applied.steps), [], "the up touched no volume");
      const replaced = ids(nodes);
      for (const [i, id] of replaced.entries()) {
        const changed = applied.steps.some(
          (x) => x.split(" ").slice(0, 2).join(" ") === `replace ${nodes[i]}`,
        );
        assert.equal(id !== before[i], changed, `${nodes[i]} replaced only if the plan said so`);
      }
      // This release turns TLS on by default: the clients verify the nodes against its CA.
      const ca = up.outputs.caCertificate?.value as string | undefined;
      trustStackCa(basePort - 3, basePort + 96, ca);
      const roles = up.outputs.nodes.value as { name: string; role: string }[];
      assert.deepEqual(
        roles.map((n) => n.role),
        ["primary", "replica", "replica"],
      );
      // And a second up of the new code has nothing to do.
      const again = dockerSteps();
      await current.preview({ onEvent: again.onEvent });
      assert.deepEqual(again.steps, [], "a second plan touches nothing");

      for (const port of [basePort, basePort + 1, basePort + 2]) {
        const deadline = Date.now() + 10_000;
        let n = await countOn(port);
        while (n !== 1000 && Date.now() < deadline) {
          await new Promise((r) => setTimeout(r, 100));
          n = await countOn(port);
        }
        assert.equal(n, 1000, `rows on port ${port}`);
      }
      const report = up.outputs.replicationReport.value as {
        primary: { lastUp?: string };
        replicas: { name: string; clones?: number; lastUp?: string }[];
      };
      for (const r of report.replicas) assert.equal(r.clones, 1, `${r.name} did not clone again`);
      // The report says what the up did: each node got a new container on its old volume.
      assert.deepEqual(
        [report.primary.lastUp, ...report.replicas.map((r) => r.lastUp)],
        ["replaced", "replaced", "replaced"],
        `the post-step's view (engine log of the up):\n${up.stdout
          .split("\n")
          .filter((l) => /check/.test(l))
          .join("\n")}`,
      );
    });
  });
