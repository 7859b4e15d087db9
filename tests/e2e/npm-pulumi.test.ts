/**
 * `npm run pulumi -- ARGS` (scripts/pulumi.sh): the README's way to reach the dev stack's config
 * and outputs from a plain shell. A bare `pulumi config …` there asks for a Pulumi Cloud login
 * (found by following the README as a user would); the script gives it the toolchain's CLI, the
 * file backend, the passphrase and the working config in .state/. Run here on a throwaway stack
 * (PG_CLUSTER_STACK) and backend, from a PATH without the toolchain, with no cluster: config only.
 */
import * as assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { after, describe, it } from "node:test";
import { announceOncePerLayer, isFirstMajorPass } from "../lib/majors";

const ROOT = path.resolve(__dirname, "..", "..");

if (!isFirstMajorPass()) announceOncePerLayer("the npm run pulumi test");
else
  describe("npm run pulumi: the dev stack's CLI from a plain shell", { timeout: 300_000 }, () => {
    const stack = `e2enpm${process.pid % 10000}${Math.floor(Math.random() * 100)}`;
    const backend = fs.mkdtempSync(path.join(os.tmpdir(), "pgc-npm-pulumi-"));
    const configFile = path.join(ROOT, ".state", `Pulumi.${stack}.yaml`);
    const toolchainBin = path.join(process.env.PG_CLUSTER_CACHE ?? "", "toolchain", "bin");
    const env: NodeJS.ProcessEnv = {
      HOME: process.env.HOME,
      // A user's shell: no toolchain on PATH, no Pulumi variables.
      PATH: (process.env.PATH ?? "")
        .split(":")
        .filter((d) => d !== toolchainBin)
        .join(":"),
      PG_CLUSTER_STACK: stack,
      PULUMI_BACKEND_URL: `file://${backend}`,
      PULUMI_CONFIG_PASSPHRASE: `npm-${randomBytes(8).toString("hex")}`,
    };
    const npmPulumi = (args: string[], input = "") =>
      spawnSync("npm", ["run", "--silent", "pulumi", "--", ...args], {
        cwd: ROOT,
        env,
        input,
        encoding: "utf8",
        timeout: 120_000,
      });
    after(() => {
      fs.rmSync(configFile, { force: true });
      fs.rmSync(path.join(ROOT, `Pulumi.${stack}.yaml`), { force: true });
      fs.rmSync(backend, { recursive: true, force: true });
    });

    it("sets and gets config (a secret from stdin) on the stack's working config in .state/", () => {
      const password = `npm-su-${randomBytes(10).toString("hex")}`;
      for (const [args, input] of [
        [["config", "set", "replicas", "3"], ""],
        [["config", "set", "--secret", "superuserPassword"], password],
      ] as const) {
        const r = npmPulumi([...args], input);
        assert.equal(r.status, 0, `npm run pulumi -- ${args.join(" ")}: ${r.stderr}`);
      }
      const replicas = npmPulumi(["config", "get", "replicas"]);
      assert.equal(
        replicas.stdout,
        "3\n",
        "stdout is the value alone (provisioning logs on stderr)",
      );
      assert.equal(npmPulumi(["config", "get", "superuserPassword"]).stdout.trim(), password);
      const saved = fs.readFileSync(configFile, "utf8");
      assert.match(saved, /pg-cluster:replicas: "3"/);
      assert.match(saved, /pg-cluster:superuserPassword:\s+secure: /);
      assert.ok(!saved.includes(password), "the password is encrypted in the file");
      // Not beside Pulumi.yaml, where Pulumi keeps only the stack's encryption salt.
      const beside = path.join(ROOT, `Pulumi.${stack}.yaml`);
      if (fs.existsSync(beside)) {
        assert.doesNotMatch(fs.readFileSync(beside, "utf8"), /replicas|superuserPassword/);
      }
    });

    it("says how to use it when given nothing", () => {
      const r = npmPulumi([]);
      assert.notEqual(r.status, 0);
      assert.match(r.stderr, /usage: npm run pulumi -- COMMAND/);
    });
  });
