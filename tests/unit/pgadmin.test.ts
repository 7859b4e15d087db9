/**
 * The optional pgAdmin (issue 14): off by default; when on, one container on the cluster network
 * with every node and both router endpoints registered by role, its own login (no default
 * password), the password as a secret file rather than in the environment, and the web UI
 * published on bindAddress only. Bad input is named before anything is created.
 */
import * as assert from "node:assert/strict";
import { describe, it } from "node:test";
import { clusterArgsFromConfig } from "../../components";
import { PASSWORDS, build, configErrorOf, inputIsSecret, plain, valueOf } from "./harness";

const CONTAINER = "docker:index/container:Container";

function configError(config: Record<string, string>): string {
  return configErrorOf(() =>
    clusterArgsFromConfig((key) => ({ ...PASSWORDS, ...config })[key], "pg-cluster-dev"),
  );
}

describe("pgAdmin", () => {
  it("is off by default: no container, no output", async () => {
    const { cluster, recorded } = await build("nopga", { replicas: 1 });
    assert.equal(
      recorded.filter((r) => r.type === CONTAINER && String(r.inputs.name).endsWith("-pgadmin"))
        .length,
      0,
    );
    assert.equal(cluster.pgadminUrl, undefined);
  });

  it("registers every node by role and both router endpoints, stores no PostgreSQL password, and publishes on bindAddress only", async () => {
    const { cluster, recorded } = await build("pga", {
      replicas: 2,
      primaryPort: 18432,
      replicaBasePort: 18433,
      primary: "pga-replica-1",
      pgadmin: { enabled: true, password: "pgadmin-Secret-1" },
    });
    const c = recorded.find((r) => r.type === CONTAINER && r.inputs.name === "pga-pgadmin");
    assert.ok(c, "a pgAdmin container");
    // primaryPort - 3 by default, on 127.0.0.1 like every other port.
    assert.deepEqual(c.inputs.ports, [{ internal: 5050, external: 18429, ip: "127.0.0.1" }]);
    // The uploads carry the login password: they reach the engine as a secret.
    assert.ok(inputIsSecret(c.inputs.uploads), "the uploads are secret");
    const uploads = plain<{ file: string; content: unknown; permissions: string }[]>(
      c.inputs.uploads,
    );
    const servers = JSON.parse(
      plain<string>(uploads.find((u) => u.file === "/pgadmin4/servers.json")?.content),
    );
    assert.deepEqual(
      Object.values(servers.Servers).map((s) => {
        const x = s as Record<string, unknown>;
        return [x.Name, x.Group, x.Host, x.Port, x.MaintenanceDB, x.Username];
      }),
      [
        ["read-write (router)", "pga", "pga-router", 5432, "mydb", "postgres"],
        ["read-only (router)", "pga", "pga-router", 5433, "mydb", "postgres"],
        ["primary: pga-replica-1", "pga", "pga-replica-1", 5432, "mydb", "postgres"],
        ["replica: pga-primary", "pga", "pga-primary", 5432, "mydb", "postgres"],
        ["replica: pga-replica-2", "pga", "pga-replica-2", 5432, "mydb", "postgres"],
      ],
    );
    for (const s of Object.values(servers.Servers)) {
      const params = (s as { ConnectionParameters: Record<string, unknown> }).ConnectionParameters;
      assert.equal(params.sslmode, "prefer", "without TLS: libpq's default");
    }
    assert.equal(
      uploads.find((u) => u.file === "/pgadmin4/pg-cluster-ca.crt"),
      undefined,
    );
    const text = JSON.stringify(servers);
    assert.doesNotMatch(text, /Password|PassFile/, "no PostgreSQL password in servers.json");
    assert.doesNotMatch(text, new RegExp(PASSWORDS.superuserPassword));
    const pw = uploads.find((u) => u.file === "/run/pgadmin/password");
    assert.equal(plain(pw?.content), "pgadmin-Secret-1");
    assert.equal(pw?.permissions, "0440");
    const envs = plain<string[]>(c.inputs.envs);
    assert.ok(envs.includes("PGADMIN_DEFAULT_EMAIL=admin@example.com"));
    assert.ok(!envs.some((e) => e.includes("pgadmin-Secret-1")), "no password in the environment");
    assert.equal(await valueOf(cluster.pgadminUrl!), "http://localhost:18429");
  });

  it("with TLS: every server verify-full against the cluster's CA, uploaded beside servers.json", async () => {
    const { recorded } = await build("pgt", {
      replicas: 1,
      tls: true,
      pgadmin: { enabled: true, password: "pgadmin-Secret-1" },
    });
    const c = recorded.find((r) => r.type === CONTAINER && r.inputs.name === "pgt-pgadmin")!;
    const uploads = plain<{ file: string; content: unknown; permissions: string }[]>(
      c.inputs.uploads,
    );
    const ca = uploads.find((u) => u.file === "/pgadmin4/pg-cluster-ca.crt");
    assert.equal(plain(ca?.content), "CERT pgt-tls-ca");
    assert.equal(ca?.permissions, "0444");
    const servers = JSON.parse(
      plain<string>(uploads.find((u) => u.file === "/pgadmin4/servers.json")?.content),
    );
    assert.deepEqual(
      Object.values(servers.Servers).map(
        (s) => (s as { ConnectionParameters: unknown }).ConnectionParameters,
      ),
      Array(4).fill({ sslmode: "verify-full", connect_timeout: 10 }),
    );
    assert.ok(plain<string[]>(c.inputs.envs).includes("PGSSLROOTCERT=/pgadmin4/pg-cluster-ca.crt"));
  });

  it("re-registers the servers when the primary moves or the replicas change (the container's inputs change)", async () => {
    const servers = async (primary?: string, replicas = 1) => {
      const { recorded } = await build("pgamove", {
        replicas,
        primaryPort: 19432,
        replicaBasePort: 19433,
        ...(primary ? { primary } : {}),
        pgadmin: { enabled: true, password: "pgadmin-Secret-1" },
      });
      const c = recorded.find((r) => r.type === CONTAINER && r.inputs.name === "pgamove-pgadmin");
      const u = plain<{ file: string; content: unknown }[]>(c?.inputs.uploads)[0];
      return Object.values(JSON.parse(plain<string>(u.content)).Servers).map(
        (s) => (s as { Name: string }).Name,
      );
    };
    assert.deepEqual((await servers()).slice(2), [
      "primary: pgamove-primary",
      "replica: pgamove-replica-1",
    ]);
    assert.deepEqual((await servers("pgamove-replica-1")).slice(2), [
      "primary: pgamove-replica-1",
      "replica: pgamove-primary",
    ]);
    assert.deepEqual((await servers(undefined, 2)).slice(2), [
      "primary: pgamove-primary",
      "replica: pgamove-replica-1",
      "replica: pgamove-replica-2",
    ]);
  });

  it("from stack config: flat keys, the password required, the port checked against the cluster's", () => {
    const { args, settings } = clusterArgsFromConfig(
      (key) =>
        ({
          ...PASSWORDS,
          pgadmin: "true",
          pgadminPassword: "pgadmin-Secret-1",
          pgadminPort: "8080",
        })[key],
      "pg-cluster-dev",
    );
    assert.equal(args.pgadmin?.enabled, true);
    assert.deepEqual(
      { ...settings.pgadmin, password: undefined },
      { port: 8080, email: "admin@example.com", image: "dpage/pgadmin4:9", password: undefined },
    );
    assert.equal(
      configError({ pgadmin: "true" }),
      "pg-cluster configuration is invalid (1 problem); nothing was created or changed:\n" +
        "  - pgadmin.password = (not set): is required when pgAdmin is enabled (it has no default password). Fix: pulumi config set --secret pgadminPassword <a password of 8+ characters> (npm run up generates one)",
    );
    const many = configError({
      pgadmin: "yes",
    });
    assert.match(many, /pgadmin = "yes": must be true or false/);
    const clash = configError({
      pgadmin: "true",
      pgadminPassword: "short",
      pgadminPort: "5433",
      pgadminEmail: "admin",
    });
    assert.match(clash, /pgadmin\.port = 5433: a node or the router publishes this host port too/);
    assert.match(clash, /pgadmin\.email = "admin": is not an email address/);
    assert.match(
      clash,
      /pgadmin\.password = \(secret, not shown\): must be at least 8 characters. Fix: pulumi config set --secret pgadminPassword/,
    );
    assert.doesNotMatch(clash, /short/, "the password is not echoed");
  });
});
