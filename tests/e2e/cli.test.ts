/**
 * The README's "Using the Pulumi CLI directly" workflow, command for command: the `pulumi` CLI as
 * a child process (argv arrays, secrets on stdin) on a throwaway stack in a throwaway file://
 * backend, with the repository as the project directory. Where cluster.test.ts drives the engine
 * through the Automation API, this proves what a user types works: stack init, config (secrets
 * never on a command line), up, stack output, scale, destroy, stack rm.
 *
 * It runs on every PostgreSQL major of the e2e layer, like cluster.test.ts, because it is cheap:
 * the whole workflow took 37 s on PostgreSQL 15 and 33 s on 17 on our 2-core machines, under the
 * 60 s we allow before running a test on the first major only.
 */
import * as assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { after, describe, it } from "node:test";
import pg from "pg";
import { ROUTER_IMAGE, announceOncePerLayer, isFirstMajorPass } from "../lib/majors";
import { sslFor, trustStackCa } from "../lib/clientTls";
import { claimPortBlock } from "../lib/ports";

const ROOT = path.resolve(__dirname, "..", "..");
const IMAGE = process.env.PG_CLUSTER_E2E_IMAGE ?? "pg-cluster-postgres:15";
const WORKFLOW_TIMEOUT = 10 * 60_000;
const COMMAND_TIMEOUT = 5 * 60_000;

/** What one command printed and how it ended. */
interface Run {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs `file args...` in the project directory; `input` goes to its stdin. Never a shell. */
function run(
  file: string,
  args: readonly string[],
  opts: { env?: NodeJS.ProcessEnv; input?: string } = {},
): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { cwd: ROOT, env: opts.env ?? process.env });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
    child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
    const timer = setTimeout(() => child.kill("SIGKILL"), COMMAND_TIMEOUT);
    child.on("error", (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(
        err.code === "ENOENT"
          ? new Error(`${file} is not on PATH: source scripts/env.sh (it puts the built CLI first)`)
          : err,
      );
    });
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
    child.stdin.end(opts.input ?? "");
  });
}

/** Names of the Docker containers, volumes and networks labelled with a cluster's name. */
async function dockerObjects(
  cluster: string,
): Promise<{ containers: string[]; volumes: string[]; networks: string[] }> {
  const names = async (args: string[], field: string) => {
    const r = await run("docker", [
      ...args,
      "--filter",
      `label=pg-cluster.cluster=${cluster}`,
      "--format",
      `{{.${field}}}`,
    ]);
    if (r.code !== 0) throw new Error(`docker ${args.join(" ")} exited ${r.code}: ${r.stderr}`);
    return r.stdout.split("\n").filter(Boolean).sort();
  };
  return {
    containers: await names(["ps", "-a"], "Names"),
    volumes: await names(["volume", "ls"], "Name"),
    networks: await names(["network", "ls"], "Name"),
  };
}

/** Runs one query as the superuser at a `host:port` endpoint. */
async function queryAt(endpoint: string, password: string, sql: string, params: unknown[] = []) {
  const [host, port] = endpoint.split(":");
  const client = new pg.Client({
    host,
    port: Number(port),
    user: "postgres",
    password,
    database: "mydb",
    connectionTimeoutMillis: 5000,
    ssl: sslFor(endpoint),
  });
  await client.connect();
  try {
    return (await client.query(sql, params)).rows;
  } finally {
    await client.end();
  }
}

// The workflow's subject is the CLI and the program, not the server's version: first pass only
// (the e2e layer's time budget).
if (!isFirstMajorPass()) announceOncePerLayer("the Pulumi CLI workflow test");
else
  describe(`the README's Pulumi CLI workflow on ${IMAGE}`, { timeout: WORKFLOW_TIMEOUT }, () => {
    // Pulumi writes Pulumi.<stack>.yaml into the project directory; .gitignore covers Pulumi.e2e*.
    const stack = `e2ecli${process.pid % 10000}${Math.floor(Math.random() * 100)}`;
    const cluster = `pg-cluster-${stack}`;
    const configFile = path.join(ROOT, `Pulumi.${stack}.yaml`);
    const backend = fs.mkdtempSync(path.join(os.tmpdir(), "pgc-cli-state-"));
    // Below Linux's ephemeral range (32768-60999), as tests/lib/stack.ts chooses them: a published
    // port in it can collide with the local end of an outgoing connection.
    const basePort = claimPortBlock();
    const superuserPassword = `cli-su-${randomBytes(12).toString("hex")}`;
    const replicationPassword = `cli-repl-${randomBytes(12).toString("hex")}`;
    // PULUMI_BACKEND_URL rather than `pulumi login`: login would rewrite the credentials of the
    // PULUMI_HOME that every other test and `npm run up` share.
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      PULUMI_BACKEND_URL: `file://${backend}`,
      PULUMI_CONFIG_PASSPHRASE: `cli-passphrase-${randomBytes(8).toString("hex")}`,
    };
    /**
     * What each pulumi command printed, to prove no password reaches the terminal; except the two
     * that print a secret because they are asked to (`config get`, `--show-secrets`).
     */
    const transcript: { command: string; printed: string }[] = [];

    /** `pulumi args... --stack <stack>`; throws with its output unless it exits 0. */
    async function pulumi(args: readonly string[], input?: string): Promise<string> {
      const r = await run("pulumi", [...args, "--stack", stack], { env, input });
      if (!args.includes("--show-secrets") && !(args[0] === "config" && args[1] === "get")) {
        transcript.push({ command: `pulumi ${args.join(" ")}`, printed: r.stdout + r.stderr });
      }
      if (r.code !== 0) {
        throw new Error(`pulumi ${args.join(" ")} exited ${r.code}:\n${r.stdout}\n${r.stderr}`);
      }
      return r.stdout;
    }
    const output = async (name: string) =>
      JSON.parse(await pulumi(["stack", "output", name, "--json"])) as unknown;

    after(async () => {
      // Runs after a failed assertion too: destroy, forget the stack, and remove what is left.
      await pulumi(["destroy", "--yes", "--skip-preview"]).catch(() => {});
      await pulumi(["stack", "rm", "--yes", "--force"]).catch(() => {});
      fs.rmSync(configFile, { force: true });
      fs.rmSync(backend, { recursive: true, force: true });
      const left = await dockerObjects(cluster);
      if (left.containers.length > 0) await run("docker", ["rm", "-f", ...left.containers]);
      if (left.volumes.length > 0) await run("docker", ["volume", "rm", "-f", ...left.volumes]);
      if (left.networks.length > 0) await run("docker", ["network", "rm", ...left.networks]);
    });

    it("stack init and config set, with the passwords read from stdin", async () => {
      // --no-select: the selected stack is kept per project in the PULUMI_HOME that `npm run up` and
      // the other tests share; every command here names its stack instead.
      await pulumi(["stack", "init", "--no-select"]);
      await pulumi(["config", "set", "replicas", "3"]);
      await pulumi(["config", "set", "--secret", "superuserPassword"], superuserPassword);
      await pulumi(["config", "set", "--secret", "replicationPassword"], replicationPassword);
      await pulumi(["config", "set", "image", IMAGE]);
      await pulumi(["config", "set", "routerImage", ROUTER_IMAGE]);
      await pulumi(["config", "set", "primaryPort", String(basePort)]);
      await pulumi(["config", "set", "replicaBasePort", String(basePort + 1)]);

      // Stored exactly (no newline from stdin), encrypted in the stack's config file.
      assert.equal(await pulumi(["config", "get", "superuserPassword"]), `${superuserPassword}\n`);
      const file = fs.readFileSync(configFile, "utf8");
      assert.match(file, /pg-cluster:superuserPassword:\s+secure: /);
      assert.ok(!file.includes(superuserPassword) && !file.includes(replicationPassword));
    });

    it("pulumi up brings up 3 replicas; a row written through the primary reaches each", async () => {
      await pulumi(["up", "--yes"]);
      // TLS is on by default: clients verify the nodes against the CA output (verify-full).
      const ca = await output("caCertificate");
      assert.match(String(ca), /^-----BEGIN CERTIFICATE-----/);
      trustStackCa(basePort - 3, basePort + 96, ca as string);
      const primary = await output("primaryEndpoint");
      const replicas = (await output("replicaEndpoints")) as string[];
      assert.equal(primary, `localhost:${basePort}`);
      assert.deepEqual(
        replicas,
        [1, 2, 3].map((n) => `localhost:${basePort + n}`),
      );

      await queryAt(primary, superuserPassword, "INSERT INTO wizards (firstname) VALUES ($1)", [
        stack,
      ]);
      for (const replica of replicas) {
        const deadline = Date.now() + 10_000;
        for (;;) {
          const rows = await queryAt(
            replica,
            superuserPassword,
            "SELECT 1 FROM wizards WHERE firstname = $1",
            [stack],
          );
          if (rows.length === 1) break;
          assert.ok(Date.now() < deadline, `the row written through the primary is on ${replica}`);
          await new Promise((r) => setTimeout(r, 100));
        }
      }
    });

    it("shows the connection strings as [secret]; no password in the export or the CLI output", async () => {
      const shown = JSON.parse(await pulumi(["stack", "output", "--json"])) as Record<
        string,
        unknown
      >;
      assert.equal(shown.connectionString, "[secret]");
      assert.equal(shown.readOnlyConnectionString, "[secret]");
      assert.equal(await output("connectionString"), "[secret]");
      assert.match(await pulumi(["stack", "output"]), /connectionString\s+\[secret\]/);
      const exported = await pulumi(["stack", "export"]);
      for (const password of [superuserPassword, replicationPassword]) {
        assert.ok(!exported.includes(password), "no password in `pulumi stack export`");
        const leaks = transcript.filter((t) => t.printed.includes(password)).map((t) => t.command);
        assert.deepEqual(leaks, [], "no password in the CLI's output");
      }
      // Asked for, the secret is the working connection string.
      const revealed = await pulumi(["stack", "output", "connectionString", "--show-secrets"]);
      assert.ok(revealed.includes(superuserPassword));
    });

    it("scales to 1 replica: one endpoint, and the extra containers and volumes are gone", async () => {
      await pulumi(["config", "set", "replicas", "1"]);
      await pulumi(["up", "--yes"]);
      assert.deepEqual(await output("replicaEndpoints"), [`localhost:${basePort + 1}`]);
      const objects = await dockerObjects(cluster);
      assert.deepEqual(objects.containers, [
        `${cluster}-primary`,
        `${cluster}-replica-1`,
        `${cluster}-router`,
      ]);
      assert.deepEqual(objects.volumes, [`${cluster}-primary-data`, `${cluster}-replica-1-data`]);
    });

    it("destroy removes every Docker object of the stack; stack rm forgets it", async () => {
      await pulumi(["destroy", "--yes"]);
      assert.deepEqual(await dockerObjects(cluster), { containers: [], volumes: [], networks: [] });
      await pulumi(["stack", "rm", "--yes"]);
      assert.ok(!fs.existsSync(configFile), `stack rm removes ${path.basename(configFile)}`);
      const ls = await run("pulumi", ["stack", "ls", "--json"], { env });
      assert.deepEqual(JSON.parse(ls.stdout), [], "no stack left in the backend");
    });
  });
