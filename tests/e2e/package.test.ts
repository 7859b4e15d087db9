import * as assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { isFirstMajorPass, announceOncePerLayer } from "../lib/majors";
import { after, describe, it } from "node:test";
import { DEFAULTS } from "../../components";

const ROOT = path.resolve(__dirname, "..", "..");

/** A value as one single-quoted sh word. */
const shQuote = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

interface Schema {
  name: string;
  resources: Record<
    string,
    {
      isComponent: boolean;
      inputProperties: Record<string, { type?: string; plain?: boolean }>;
      requiredInputs: string[];
      properties: Record<string, unknown>;
    }
  >;
  types: Record<string, { properties: Record<string, unknown> }>;
}

/** The outputs index.ts exports: every one is a documented output of the component. */
function stackOutputs(): string[] {
  const program = fs.readFileSync(path.join(ROOT, "index.ts"), "utf8");
  return [...program.matchAll(/^export const (\w+) = cluster\.\1;$/gm)].map((m) => m[1]);
}

if (!isFirstMajorPass()) announceOncePerLayer("the component package test");
else
  describe("the component package", { timeout: 300_000 }, () => {
    // `pulumi package add` needs a language host that can run plugins (RunPlugin), which the one we
    // can build (sdk v3.68.0) lacks; `pulumi package get-schema` takes a provider executable
    // instead. This is that executable: Pulumi's own plugin runner over the package directory,
    // which is what `pulumi package add` runs for a `runtime: nodejs` PulumiPlugin.yaml.
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "pgc-package-"));
    after(() => fs.rmSync(dir, { recursive: true, force: true }));

    it("pulumi package get-schema infers PostgresCluster's inputs, outputs and report types", () => {
      assert.ok(fs.existsSync(path.join(ROOT, "PulumiPlugin.yaml")), "PulumiPlugin.yaml exists");
      const runner = path.join(ROOT, "node_modules", "@pulumi", "pulumi", "cmd", "run-plugin");
      const plugin = path.join(dir, "pulumi-resource-pg-cluster");
      fs.writeFileSync(
        plugin,
        `#!/bin/sh\ncd ${shQuote(ROOT)} && exec node ${shQuote(runner)} ${shQuote(ROOT)} "$@"\n`,
        { mode: 0o755 },
      );
      const run = spawnSync("pulumi", ["package", "get-schema", plugin], {
        cwd: dir,
        encoding: "utf8",
        timeout: 240_000,
      });
      assert.equal(run.status, 0, `pulumi package get-schema failed:\n${run.stderr}`);
      const schema = JSON.parse(run.stdout) as Schema;
      assert.equal(schema.name, "pg-cluster");
      assert.deepEqual(Object.keys(schema.resources), ["pg-cluster:index:PostgresCluster"]);
      const cluster = schema.resources["pg-cluster:index:PostgresCluster"];
      assert.equal(cluster.isComponent, true);

      // Inputs: every defaulted argument, those whose defaults are derived (primary from the
      // name, the router's ports from primaryPort) and the two passwords, the required ones.
      assert.deepEqual(
        Object.keys(cluster.inputProperties).sort(),
        [
          ...Object.keys(DEFAULTS),
          "primary",
          "readWritePort",
          "readOnlyPort",
          "superuserPassword",
          "replicationPassword",
          "pgadmin",
          "backup",
          "restore",
          "hosts",
          "placement",
        ].sort(),
      );
      assert.deepEqual(cluster.requiredInputs.sort(), ["replicationPassword", "superuserPassword"]);
      // The replica count decides how many resources exist: a plain value, never an Output.
      assert.equal(cluster.inputProperties.replicas.plain, true);
      assert.equal(cluster.inputProperties.replicas.type, "number");
      assert.equal(cluster.inputProperties.superuserPassword.plain, undefined);

      // Outputs: the ones the stack exports, plus the network resource.
      assert.deepEqual(
        Object.keys(cluster.properties).sort(),
        [...stackOutputs(), "network"].sort(),
      );
      assert.ok(stackOutputs().includes("internalReplicaEndpoints"));
      assert.deepEqual(Object.keys(schema.types).sort(), [
        "pg-cluster:index:ArchiverReport",
        "pg-cluster:index:BackupArgs",
        "pg-cluster:index:BackupResult",
        "pg-cluster:index:ClusterNode",
        "pg-cluster:index:DockerHostArgs",
        "pg-cluster:index:PgAdminArgs",
        "pg-cluster:index:PrimaryReport",
        "pg-cluster:index:ReplicaReport",
        "pg-cluster:index:ReplicationReport",
        "pg-cluster:index:RestoreArgs",
        "pg-cluster:index:RouterReport",
      ]);
      assert.ok("caughtUp" in schema.types["pg-cluster:index:ReplicaReport"].properties);
    });
  });
