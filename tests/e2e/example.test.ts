import * as assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { ROUTER_IMAGE, isFirstMajorPass, announceOncePerLayer } from "../lib/majors";
import { after, before, describe, it } from "node:test";
import { LocalWorkspace, Stack } from "@pulumi/pulumi/automation";
import { claimPortBlock } from "../lib/ports";

const ROOT = path.resolve(__dirname, "..", "..");
const EXAMPLE = path.join(ROOT, "examples", "two-clusters");
const IMAGE = process.env.PG_CLUSTER_E2E_IMAGE ?? "pg-cluster-postgres:15";

/** `docker` with arguments; its stdout, or a thrown error with its stderr. */
function docker(...args: string[]): string {
  const r = spawnSync("docker", args, { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`docker ${args.join(" ")}: ${r.stderr}`);
  return r.stdout;
}

/** Names of every container, volume and network whose name starts with `prefix`. */
function dockerObjects(prefix: string): string[] {
  const names = [
    ...docker("ps", "-a", "--format", "{{.Names}}").split("\n"),
    ...docker("volume", "ls", "--format", "{{.Name}}").split("\n"),
    ...docker("network", "ls", "--format", "{{.Name}}").split("\n"),
  ];
  return names.filter((n) => n.startsWith(prefix)).sort();
}

if (!isFirstMajorPass()) announceOncePerLayer("the examples/two-clusters test");
else
  describe(
    "examples/two-clusters: the component imported as a package",
    { timeout: 600_000 },
    () => {
      const stackName = `e2eex${process.pid % 10000}${Math.floor(Math.random() * 100)}`;
      const prefix = `pg-cluster-example-${stackName}`;
      // Below Linux's ephemeral range, like every test port.
      const basePort = claimPortBlock() + 50;
      const backend = fs.mkdtempSync(path.join(os.tmpdir(), "pgc-example-state-"));
      let stack: Stack | undefined;

      before(() => {
        // "pg-cluster" resolves through package.json's exports map to the package build, as for a user.
        const build = spawnSync("npm", ["run", "--silent", "build"], {
          cwd: ROOT,
          encoding: "utf8",
        });
        assert.equal(build.status, 0, `npm run build failed:\n${build.stdout}${build.stderr}`);
      });

      after(async () => {
        try {
          if (stack) {
            await stack.destroy();
            await stack.workspace.removeStack(stackName);
          }
        } finally {
          fs.rmSync(backend, { recursive: true, force: true });
          fs.rmSync(path.join(EXAMPLE, `Pulumi.${stackName}.yaml`), { force: true });
        }
      });

      it("brings up two clusters and an app that reads through a replica, with no diff after, and destroys cleanly", async () => {
        stack = await LocalWorkspace.createOrSelectStack(
          { stackName, workDir: EXAMPLE },
          {
            envVars: {
              PULUMI_BACKEND_URL: `file://${backend}`,
              PULUMI_CONFIG_PASSPHRASE: "",
            },
          },
        );
        await stack.setAllConfig({
          image: { value: IMAGE },
          routerImage: { value: ROUTER_IMAGE },
          basePort: { value: String(basePort) },
          superuserPassword: { value: "example-Su-pw-7c1e", secret: true },
          replicationPassword: { value: "example-Repl-pw-93ab", secret: true },
        });
        const up = await stack.up();
        assert.equal(up.summary.result, "succeeded");
        assert.equal(up.outputs.ordersReadOnlyInNetwork.value, `${prefix}-orders-router:5433`);
        assert.equal(up.outputs.ordersEndpoint.value, `localhost:${basePort}`);
        assert.equal(up.outputs.inventoryEndpoint.value, `localhost:${basePort + 4}`);

        // The app container reaches the router by its in-network name, which hands its read-only
        // session to the replica; it reads the seeded rows there.
        const reader = up.outputs.readerName.value as string;
        const deadline = Date.now() + 30_000;
        let logs = "";
        const line = `wizards: Harry,Ron,Hermione from ${prefix}-orders-replica-1`;
        while (!logs.includes(line) && Date.now() < deadline) {
          await new Promise((r) => setTimeout(r, 500));
          const r = spawnSync("docker", ["logs", reader], { encoding: "utf8" });
          logs = r.stdout + r.stderr;
        }
        assert.ok(logs.includes(line), `reader's log:\n${logs.slice(-2000)}`);
        const inspect = JSON.parse(docker("inspect", reader))[0] as { Config: { Env: string[] } };
        assert.ok(
          !inspect.Config.Env.some((e) => e.includes("example-Su-pw-7c1e")),
          "the app's password is a file, not in its environment",
        );

        // The second cluster's resources went through the explicit provider.
        const state = (await stack.exportStack()).deployment as {
          resources: { type: string; urn: string; provider?: string }[];
        };
        const inventoryContainer = state.resources.find(
          (r) =>
            r.type === "docker:index/container:Container" && r.urn.endsWith("inventory-primary"),
        );
        assert.match(inventoryContainer?.provider ?? "", /::local-docker::/);

        const preview = await stack.preview({ expectNoChanges: true });
        assert.equal(preview.changeSummary.create ?? 0, 0);

        await stack.destroy();
        assert.deepEqual(dockerObjects(prefix), [], "nothing of the example is left on Docker");
      });
    },
  );
