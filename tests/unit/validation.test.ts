import * as assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  MAX_CLUSTER_NAME_LENGTH,
  clusterArgsFromConfig,
  validateClusterArgs,
} from "../../components";
import { build, configErrorOf } from "./harness";

const PASSWORDS = {
  superuserPassword: "su-Secret-9f1c2a",
  replicationPassword: "repl-Secret-7d3e0b",
};
const HEADER = (n: number) =>
  `pg-cluster configuration is invalid (${n} problem${n === 1 ? "" : "s"}); nothing was created or changed:\n`;

/** The message of the error that validating `config` (raw stack config strings) throws. */
function configError(config: Record<string, string>): string {
  return configErrorOf(() => clusterArgsFromConfig((key) => ({ ...PASSWORDS, ...config })[key]));
}

describe("config validation", () => {
  it("accepts primary = any node of the cluster, and names the nodes when it is not one", () => {
    const read = (config: Record<string, string>) => (key: string) =>
      ({ ...PASSWORDS, ...config })[key];
    const { settings } = clusterArgsFromConfig(
      read({ replicas: "2", primary: "pg-cluster-dev-replica-2" }),
      "pg-cluster-dev",
    );
    assert.equal(settings.primary, "pg-cluster-dev-replica-2");
    assert.equal(
      clusterArgsFromConfig(read({ replicas: "2" }), "pg-cluster-dev").settings.primary,
      "pg-cluster-dev-primary",
    );
    assert.throws(
      () => clusterArgsFromConfig(read({ replicas: "1", primary: "replica-1" }), "pg-cluster-dev"),
      {
        message:
          HEADER(1) +
          '  - primary = "replica-1": is not a node of this cluster. Fix: pulumi config set primary <one of: pg-cluster-dev-primary, pg-cluster-dev-replica-1>',
      },
    );
    assert.throws(
      () =>
        clusterArgsFromConfig(
          read({ replicas: "1", primary: "pg-cluster-dev-replica-2" }),
          "pg-cluster-dev",
        ),
      {
        message:
          HEADER(1) +
          '  - primary = "pg-cluster-dev-replica-2": is a node that replicas = 1 would remove. Fix: move the primary first (pulumi config set primary pg-cluster-dev-primary, pulumi up), then scale down',
      },
    );
  });

  it("reports a stack name that does not fit together with bad config, in one error", () => {
    const name = `pg-cluster-${"s".repeat(45)}`;
    let message = "";
    try {
      clusterArgsFromConfig((key) => ({ ...PASSWORDS, replicas: "x" })[key], name);
    } catch (err) {
      message = (err as Error).message;
    }
    assert.match(message, /^pg-cluster configuration is invalid \(2 problems\)/);
    assert.match(message, /- name = "pg-cluster-s+": is 56 characters; at most 52 fit/);
    assert.match(message, /- replicas = "x": must be a whole number/);
  });

  it("rejects a negative replica count", () => {
    assert.equal(
      configError({ replicas: "-1" }),
      HEADER(1) +
        "  - replicas = -1: must be between 0 and 16. Fix: pulumi config set replicas <0..16>",
    );
  });

  it("rejects a fractional replica count", () => {
    assert.equal(
      configError({ replicas: "1.5" }),
      HEADER(1) +
        "  - replicas = 1.5: must be a whole number. Fix: pulumi config set replicas <0..16>",
    );
  });

  it("rejects a replica count that is not a number", () => {
    assert.equal(
      configError({ replicas: "x" }),
      HEADER(1) +
        '  - replicas = "x": must be a whole number. Fix: pulumi config set replicas <number>',
    );
  });

  it("rejects 1000 replicas", () => {
    assert.equal(
      configError({ replicas: "1000" }),
      HEADER(1) +
        "  - replicas = 1000: must be between 0 and 16. Fix: pulumi config set replicas <0..16>",
    );
  });

  it("rejects an empty password and names the exact command, without echoing secrets", () => {
    assert.equal(
      configError({ superuserPassword: "" }),
      HEADER(1) +
        "  - superuserPassword = (empty): must not be empty. Fix: pulumi config set --secret superuserPassword <a password of 8+ characters>",
    );
    const short = configError({ replicationPassword: "abc" });
    assert.match(
      short,
      /replicationPassword = \(secret, not shown\): must be at least 8 characters/,
    );
    assert.ok(!short.includes("abc"));
  });

  it("rejects a missing password with the exact command", () => {
    const msg = (() => {
      try {
        validateClusterArgs({ superuserPassword: PASSWORDS.superuserPassword } as never);
      } catch (err) {
        return (err as Error).message;
      }
      return "";
    })();
    assert.equal(
      msg,
      HEADER(1) +
        "  - replicationPassword = (not set): is required. Fix: pulumi config set --secret replicationPassword <a password of 8+ characters>",
    );
  });

  it("rejects two nodes on one host port", () => {
    assert.equal(
      configError({ replicas: "2", primaryPort: "5434", readWritePort: "6000" }),
      HEADER(1) +
        "  - primaryPort = 5434: the primary and replica 2 would both publish host port 5434 (replicas use 5433..5434). Fix: give the primary a port outside that range, or move the replicas with pulumi config set replicaBasePort 5435",
    );
  });

  it("rejects a router port that a node publishes, saying where the default came from", () => {
    assert.equal(
      configError({ replicas: "2", primaryPort: "5435" }),
      HEADER(2) +
        "  - readWritePort = 5433: replica 1 publishes host port 5433 too. Fix: pulumi config set readWritePort <a port no node uses> (by default readWritePort = primaryPort - 2 and readOnlyPort = readWritePort + 1)\n" +
        "  - readOnlyPort = 5434: replica 2 publishes host port 5434 too. Fix: pulumi config set readOnlyPort <a port no node uses> (by default readWritePort = primaryPort - 2 and readOnlyPort = readWritePort + 1)",
    );
    assert.equal(
      configError({ replicas: "1", readWritePort: "5432", readOnlyPort: "5432" }),
      HEADER(2) +
        "  - readOnlyPort = 5432: is the read-write endpoint's port too. Fix: pulumi config set readOnlyPort 5433\n" +
        "  - readWritePort = 5432: the primary publishes host port 5432 too. Fix: pulumi config set readWritePort <a port no node uses>",
    );
  });

  it("reports every problem at once", () => {
    const msg = configError({
      replicas: "x",
      bindAddress: "everywhere",
      database: "My-DB",
      superuserPassword: "",
      maxSlotWalKeepSize: "-1",
      synchronousReplicas: "2",
    });
    assert.ok(msg.startsWith(HEADER(6)), msg);
    for (const field of [
      "replicas",
      "bindAddress",
      "database",
      "superuserPassword",
      "maxSlotWalKeepSize",
      "synchronousReplicas",
    ]) {
      assert.match(msg, new RegExp(`  - ${field} = `));
    }
  });

  it("rejects more synchronous replicas than replicas", () => {
    assert.match(
      configError({ replicas: "1", synchronousReplicas: "2" }),
      /synchronousReplicas = 2: must be between 0 and 1\. Fix: pulumi config set synchronousReplicas <0\.\.1>/,
    );
  });

  it("rejects a replication role that is the superuser", () => {
    assert.match(
      configError({ replicationUser: "postgres" }),
      /replicationUser = "postgres": must differ from the superuser/,
    );
  });

  it("rejects a cluster name too long for PostgreSQL's application names, before creating anything", async () => {
    const name = "x".repeat(MAX_CLUSTER_NAME_LENGTH + 1);
    await assert.rejects(build(name, { replicas: 1 }), (err: Error) => {
      assert.equal(
        err.message,
        HEADER(1) +
          `  - name = "${name}": is ${name.length} characters; at most ${MAX_CLUSTER_NAME_LENGTH} fit, because node names (<name>-replica-16) are PostgreSQL application names, which are cut at 63 bytes. Fix: use a shorter stack name (index.ts names the cluster <project>-<stack>), or a shorter component name when embedding`,
      );
      return true;
    });
    assert.equal(MAX_CLUSTER_NAME_LENGTH, 52);
    const { recorded } = await build("y".repeat(MAX_CLUSTER_NAME_LENGTH), { replicas: 1 });
    assert.ok(recorded.length > 0, "the longest allowed name builds");
  });

  it("applies the defaults, including 0 replicas", () => {
    const s = validateClusterArgs({ ...PASSWORDS, replicas: 0 });
    assert.equal(s.replicas, 0);
    assert.equal(s.image, "postgres:16");
    assert.equal(s.primaryPort, 5432);
    assert.deepEqual(s.replicaPorts, []);
    assert.equal(s.bindAddress, "127.0.0.1");
    assert.equal(s.database, "mydb");
    assert.equal(s.maxSlotWalKeepSize, "1GB");
    const three = validateClusterArgs({ ...PASSWORDS, replicas: 3 });
    assert.deepEqual(three.replicaPorts, [5433, 5434, 5435]);
  });
});

describe("hosts and placement", () => {
  const h = (name: string, address: string, dockerHost = `unix:///run/${name}.sock`) => ({
    name,
    dockerHost,
    address,
  });
  const hosts = [h("h1", "10.0.0.1"), h("h2", "10.0.0.2"), h("h3", "db3.example.com")];

  it("places node 0 on the first host and the others round-robin, unless placement says", () => {
    const round = validateClusterArgs({ ...PASSWORDS, replicas: 3, hosts });
    assert.deepEqual(round.hosts?.placement, ["h1", "h2", "h3", "h1"]);
    assert.deepEqual(round.hosts?.list, hosts);
    const placed = validateClusterArgs({
      ...PASSWORDS,
      replicas: 1,
      hosts,
      placement: ["h3", "h1"],
    });
    assert.deepEqual(placed.hosts?.placement, ["h3", "h1"]);
    assert.equal(validateClusterArgs({ ...PASSWORDS }).hosts, undefined, "none without hosts");
  });

  it("names every bad host field and placement entry in one error", () => {
    assert.throws(
      () =>
        validateClusterArgs({
          ...PASSWORDS,
          replicas: 2,
          hosts: [
            h("H 1", "10.0.0.1", "http://x"),
            h("h2", "10.0.0.1:2375"),
            h("h2", "10.0.0.3"),
            h("h4", "10.0.0.3", "tcp://10.0.0.4:2376"),
          ],
          placement: ["h2", "h9"],
        }),
      {
        message:
          HEADER(7) +
          [
            `  - hosts[0].name = "H 1": must be 1-20 of a-z, 0-9 and '-', starting with a letter. Fix: pulumi config set --path 'hosts[0].name' h1`,
            `  - hosts[0].dockerHost = "http://x": must be unix:///path, tcp://host:port or ssh://[user@]host. Fix: pulumi config set --path 'hosts[0].dockerHost' ssh://admin@10.0.0.1`,
            `  - hosts[1].address = "10.0.0.1:2375": must be an IPv4 address or a DNS name (no scheme, no port) where the other hosts reach this one. Fix: pulumi config set --path 'hosts[1].address' 10.0.0.2`,
            `  - hosts[2].name = "h2": is the name of an earlier host. Fix: give each host its own name: pulumi config set --path 'hosts[2].name' h3`,
            `  - hosts[3].address = "10.0.0.3": is the address of an earlier host. Fix: give each host the address it is reached at`,
            `  - placement = ["h2","h9"]: must name a host for each of the 3 nodes (1 + replicas), not 2. Fix: a host name per node, node 0 first: pulumi config set --path 'placement[0]' h2`,
            `  - placement[1] = "h9": is not a host (hosts: h2, h4). Fix: a host name per node, node 0 first: pulumi config set --path 'placement[0]' h2`,
          ].join("\n"),
      },
    );
  });

  it("refuses placement without hosts, and an empty host list", () => {
    assert.throws(() => validateClusterArgs({ ...PASSWORDS, placement: ["h1"] }), {
      message:
        HEADER(1) +
        `  - placement = ["h1"]: needs hosts. Fix: name the Docker hosts first: pulumi config set --path 'hosts[0].name' h1 (and dockerHost, address), or remove placement`,
    });
    assert.throws(() => validateClusterArgs({ ...PASSWORDS, hosts: [] }), {
      message:
        HEADER(1) +
        `  - hosts = []: must be a list of at least one { name, dockerHost, address }. Fix: pulumi config set --path 'hosts[0].name' h1; --path 'hosts[0].dockerHost' unix:///var/run/docker.sock; --path 'hosts[0].address' 10.0.0.1`,
    });
  });

  it("takes tls with pgAdmin; tlsRenewal is one word", () => {
    const args = {
      ...PASSWORDS,
      tls: true,
      pgadmin: { enabled: true, password: "pgadmin-Secret-1a2b" },
    };
    assert.equal(validateClusterArgs(args).tls, true);
    assert.equal(
      validateClusterArgs({ ...PASSWORDS, tlsRenewal: "2026-11-27" }).tlsRenewal,
      "2026-11-27",
    );
    assert.throws(
      () => validateClusterArgs({ ...PASSWORDS, tlsRenewal: "a b" }),
      /tlsRenewal = "a b": must be a word of at most 64 characters .*Fix: pulumi config set tlsRenewal 2026-11-27/,
    );
  });

  it("refuses pgAdmin with hosts, for now", () => {
    const hosts = [{ name: "h1", dockerHost: "unix:///run/h1.sock", address: "10.0.0.1" }];
    assert.throws(
      () =>
        validateClusterArgs({
          ...PASSWORDS,
          hosts,
          pgadmin: { enabled: true, password: "pgadmin-Secret-1a2b" },
        }),
      /pgadmin = .*: is not available with hosts yet .*Fix: pulumi config set pgadmin false, or remove hosts/,
    );
  });
});

describe("hosts and placement from stack config", () => {
  it("reads them as set with --path (JSON), and names a value that is not JSON", () => {
    const { settings } = clusterArgsFromConfig(
      (key) =>
        ({
          ...PASSWORDS,
          replicas: "1",
          hosts: JSON.stringify([
            { name: "h1", dockerHost: "unix:///run/h1.sock", address: "10.0.0.1" },
            { name: "h2", dockerHost: "ssh://admin@10.0.0.2", address: "10.0.0.2" },
          ]),
        })[key],
    );
    assert.deepEqual(settings.hosts?.placement, ["h1", "h2"]);
    assert.equal(
      configError({ hosts: "h1,h2" }),
      HEADER(1) +
        `  - hosts = "h1,h2": must be a list (set it with --path). Fix: pulumi config set --path 'hosts[0].name' h1 (and dockerHost, address)`,
    );
  });
});

describe("tls from stack config", () => {
  it("reads true and false, and names any other value with its fix", () => {
    const read = (tls: string) => (key: string) =>
      ({ ...PASSWORDS, tls })[key as "tls"] as string | undefined;
    assert.equal(clusterArgsFromConfig(read("true")).settings.tls, true);
    assert.equal(clusterArgsFromConfig(read("false")).settings.tls, false);
    assert.throws(
      () => clusterArgsFromConfig(read("yes")),
      /tls = "yes": must be true or false\. Fix: pulumi config set tls true/,
    );
  });
});
