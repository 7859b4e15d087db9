/**
 * Nodes placed on several Docker hosts (issue 11), seen through Pulumi's mocks: a provider and a
 * network per host, each node's resources on its host's engine, its port published on that host's
 * address, replication allowed from the other hosts, and the steps told each node's engine.
 */
import * as assert from "node:assert/strict";
import { describe, it } from "node:test";
import * as fs from "node:fs";
import * as path from "node:path";
import * as docker from "@pulumi/docker";
import { CONTAINER_CA } from "../../assets/roles.mjs";
import { PostgresCluster } from "../../components";
import { CONTAINER_VOLUME_DIR } from "../../components/assets";
import { CONTAINER_TLS_DIR } from "../../components/tls";
import { validateClusterArgs } from "../../components/settings";
import {
  PASSWORDS,
  Recorded,
  build,
  configErrorOf,
  inputIsSecret,
  plain,
  valueOf,
  envOf,
  stepEnv,
} from "./harness";

const HOSTS = [
  { name: "h1", dockerHost: "unix:///run/h1.sock", address: "10.213.77.11" },
  { name: "h2", dockerHost: "tcp://10.213.77.12:2375", address: "10.213.77.12" },
  { name: "h3", dockerHost: "ssh://admin@db3.example", address: "db3.example" },
];

describe("nodes on several Docker hosts", () => {
  it("places each node on its host's engine and network, published on its address", async () => {
    const { recorded, cluster } = await build("pgc-hosts", { replicas: 3, hosts: HOSTS });
    const providers = recorded.filter((r) => r.type === "pulumi:providers:docker");
    assert.deepEqual(
      providers.map((p) => [p.name, p.inputs.host]),
      HOSTS.map((h) => [`pgc-hosts-${h.name}`, h.dockerHost]),
    );
    const providerOf = (host: string) => {
      const p = providers.find((x) => x.name === `pgc-hosts-${host}`) as Recorded;
      return (ref?: string) => ref?.startsWith(`urn:`) && ref.includes(`::${p.name}::`);
    };
    const networks = recorded.filter((r) => r.type === "docker:index/network:Network");
    assert.deepEqual(
      networks.map((n) => [n.name, n.inputs.name]),
      HOSTS.map((h) => [`pgc-hosts-net-${h.name}`, "pgc-hosts-net"]),
    );
    for (const [i, h] of HOSTS.entries()) {
      assert.ok(providerOf(h.name)(networks[i].provider), `${h.name}'s network on its engine`);
    }
    // Round-robin, node 0 on the first host: primary h1, replica-1 h2, replica-2 h3, replica-3 h1.
    const expected = ["h1", "h2", "h3", "h1"];
    const containers = recorded.filter(
      (r) => r.type === "docker:index/container:Container" && !/router/.test(r.name),
    );
    const volumes = recorded.filter((r) => r.type === "docker:index/volume:Volume");
    for (const [i, node] of ["primary", "replica-1", "replica-2", "replica-3"].entries()) {
      const c = containers.find((r) => r.name === `pgc-hosts-${node}`) as Recorded;
      const v = volumes.find((r) => r.name === `pgc-hosts-${node}-data`) as Recorded;
      const host = HOSTS.find((h) => h.name === expected[i])!;
      assert.ok(providerOf(host.name)(c.provider), `${node}'s container on ${host.name}`);
      assert.ok(providerOf(host.name)(v.provider), `${node}'s volume on ${host.name}`);
      const ports = c.inputs.ports as { ip: string }[];
      // A DNS name cannot be bound: every address of that host then.
      assert.equal(ports[0].ip, host.name === "h3" ? "0.0.0.0" : host.address);
      assert.deepEqual(
        envOf(c).PGC_REPLICATION_PEERS.split(" "),
        HOSTS.filter((h) => h !== host).map((h) => h.address),
        `${node} accepts replication from the other hosts`,
      );
    }
    const router = recorded.find((r) => r.name === "pgc-hosts-router" && r.custom) as Recorded;
    assert.ok(providerOf("h1")(router.provider), "the router on the first host");
    const config = plain<{ content: string }[]>(router.inputs.uploads)[0].content;
    const servers = plain<string>(config)
      .split("\n")
      .filter((l) => /^\s+server /.test(l));
    assert.ok(servers.some((l) => /server pgc-hosts-primary pgc-hosts-primary:5432 /.test(l)));
    assert.ok(servers.some((l) => /server pgc-hosts-replica-1 10\.213\.77\.12:\d+ /.test(l)));
    assert.ok(servers.some((l) => /server pgc-hosts-replica-2 db3\.example:\d+ /.test(l)));

    const topology = recorded.find((r) => r.name === "pgc-hosts-topology" && r.custom) as Recorded;
    const nodes = JSON.parse(stepEnv(topology).PGC_NODES) as {
      name: string;
      host: string;
      site: string;
      dockerHost: string;
    }[];
    assert.deepEqual(
      nodes.map((n) => [n.site, n.host, n.dockerHost]),
      expected.map((name) => {
        const h = HOSTS.find((x) => x.name === name)!;
        return [h.name, h.address, h.dockerHost];
      }),
    );
    assert.equal(stepEnv(topology).PGC_ROUTER_DOCKER_HOST, HOSTS[0].dockerHost);
    const guard = recorded.find((r) => r.name === "pgc-hosts-guard" && r.custom) as Recorded;
    assert.deepEqual(
      JSON.parse(stepEnv(guard).PGC_DOCKER_HOSTS),
      HOSTS.map((h) => h.dockerHost),
    );

    const endpoints = await valueOf(cluster.replicaEndpoints);
    assert.equal(endpoints[0].split(":")[0], "10.213.77.12");
    assert.equal(endpoints[1].split(":")[0], "db3.example");
    assert.match(await valueOf(cluster.readWriteEndpoint), /^10\.213\.77\.11:\d+$/);
    assert.match(await valueOf(cluster.connectionString), /@10\.213\.77\.11:\d+\/mydb$/);
  });

  it("takes the user's provider for a host (hostProviders), and makes the others", async () => {
    const mine = new docker.Provider("mine-h2", { host: HOSTS[1].dockerHost });
    const { recorded } = await build(
      "pgc-hp",
      { replicas: 2, hosts: HOSTS },
      { hostProviders: { h2: mine } },
    );
    assert.deepEqual(
      recorded.filter((r) => r.type === "pulumi:providers:docker").map((p) => p.name),
      ["mine-h2", "pgc-hp-h1", "pgc-hp-h3"],
    );
    const replica = recorded.find((r) => r.name === "pgc-hp-replica-1" && r.custom)!;
    assert.match(
      replica.provider ?? "",
      /::mine-h2::/,
      "replica-1 on h2, through the user's provider",
    );
    assert.throws(
      () =>
        new PostgresCluster(
          "pgc-hpx",
          { ...PASSWORDS, hosts: HOSTS },
          { hostProviders: { h9: mine } },
        ),
      /hostProviders = "h9": names no host of hosts .*Fix: name one of h1, h2, h3/,
    );
  });

  it("follows placement, and without hosts keeps one unnamed network and no provider", async () => {
    const placed = await build("pgc-placed", {
      replicas: 1,
      hosts: HOSTS.slice(0, 2),
      placement: ["h2", "h2"],
    });
    const topology = placed.recorded.find((r) => r.name === "pgc-placed-topology" && r.custom)!;
    const sites = (JSON.parse(stepEnv(topology).PGC_NODES) as { site: string }[]).map(
      (n) => n.site,
    );
    assert.deepEqual(sites, ["h2", "h2"]);
    const primary = placed.recorded.find((r) => r.name === "pgc-placed-primary" && r.custom)!;
    assert.equal(envOf(primary).PGC_REPLICATION_PEERS, "10.213.77.11", "the router's host");

    const one = await build("pgc-one", { replicas: 1 });
    assert.equal(one.recorded.filter((r) => r.type === "pulumi:providers:docker").length, 0);
    assert.deepEqual(
      one.recorded.filter((r) => r.type === "docker:index/network:Network").map((n) => n.name),
      ["pgc-one-net"],
    );
    const node = one.recorded.find((r) => r.name === "pgc-one-primary" && r.custom)!;
    assert.equal(envOf(node).PGC_REPLICATION_PEERS, undefined);
    assert.ok(!node.provider, "the provider of the component's options");
  });
});

describe("TLS (tls: true)", () => {
  it("makes a CA and a certificate per node naming every address it is dialled at, secret and not logged", async () => {
    const { recorded, cluster } = await build("pgc-tls", { replicas: 1, hosts: HOSTS, tls: true });
    const steps = recorded.filter(
      (r) => r.type === "command:local:Command" && /^node tls\.mjs /.test(String(r.inputs.create)),
    );
    assert.deepEqual(
      steps.map((r) => [r.name, r.inputs.create]),
      [
        ["pgc-tls-tls-ca", "node tls.mjs ca"],
        ["pgc-tls-primary-tls", "node tls.mjs node"],
        ["pgc-tls-replica-1-tls", "node tls.mjs node"],
      ],
    );
    for (const step of steps)
      assert.equal(step.inputs.logging, "stderr", `${step.name} logs no key`);
    const env = stepEnv(steps[2]);
    assert.deepEqual(JSON.parse(env.PGC_TLS_DNS_NAMES), [
      "pgc-tls-replica-1",
      "pgc-tls-router",
      "localhost",
      "db3.example",
    ]);
    assert.deepEqual(JSON.parse(env.PGC_TLS_IP_ADDRESSES), [
      "10.213.77.11",
      "10.213.77.12",
      "127.0.0.1",
    ]);
    assert.equal(env.PGC_TLS_CA_KEY, "KEY pgc-tls-tls-ca", "the CA's key, from the CA step");

    const node = recorded.find((r) => r.name === "pgc-tls-replica-1" && r.custom)!;
    assert.equal(envOf(node).PGC_TLS, "on");
    const uploads = plain<{ file: string }[]>(node.inputs.uploads).map((u) => u.file);
    assert.deepEqual(
      uploads,
      ["/opt/pg-cluster/node.sh", "/run/secrets/pg-cluster"],
      "no TLS file",
    );
    const topology = recorded.find((r) => r.name === "pgc-tls-topology" && r.custom)!;
    assert.equal(stepEnv(topology).PGC_TLS, "on");
    assert.equal(stepEnv(topology).PGC_TLS_CA, "CERT pgc-tls-tls-ca");
    // What ctl.sh tls reads, per node: the CA's certificate, the node's, its key; secret.
    const bundles = {
      "pgc-tls-primary": "CERT pgc-tls-tls-ca\nCERT pgc-tls-primary-tls\nKEY pgc-tls-primary-tls",
      "pgc-tls-replica-1":
        "CERT pgc-tls-tls-ca\nCERT pgc-tls-replica-1-tls\nKEY pgc-tls-replica-1-tls",
    };
    assert.deepEqual(JSON.parse(stepEnv(topology).PGC_TLS_FILES), bundles);
    assert.ok(inputIsSecret(topology.inputs.environment), "the keys are secret");
    const gate = recorded.find((r) => r.name === "pgc-tls-primary-roll" && r.custom)!;
    assert.deepEqual(JSON.parse(stepEnv(gate).PGC_TLS_FILES), bundles, "the first gate's too");
    const slot = recorded.find((r) => r.name === "pgc-tls-replica-1-slot" && r.custom)!;
    assert.equal(stepEnv(slot).PGC_TLS_CA, "CERT pgc-tls-tls-ca", "the slot's drop verifies too");
    const check = recorded.find((r) => r.name === "pgc-tls-check" && r.custom)!;
    assert.equal(stepEnv(check).PGC_TLS_FILES, undefined, "the post-step needs no key");

    assert.equal(await valueOf(cluster.caCertificate!), "CERT pgc-tls-tls-ca");
    assert.match(await valueOf(cluster.connectionString), /\/mydb\?sslmode=verify-full$/);
    assert.match(
      await valueOf(cluster.multiHostReadOnlyConnectionString),
      /\?target_session_attrs=standby&load_balance_hosts=random&sslmode=verify-full$/,
    );
  });

  it("puts the files where the entrypoint and the steps look for them: on the volume", () => {
    assert.equal(CONTAINER_CA, `${CONTAINER_TLS_DIR}/ca.crt`, "roles.mjs");
    assert.equal(CONTAINER_TLS_DIR, `${CONTAINER_VOLUME_DIR}/conf/tls`, "components/tls.ts");
    const lib = fs.readFileSync(path.join(__dirname, "..", "..", "assets", "lib.sh"), "utf8");
    for (const line of [
      `PGC_VOLUME="\${PGC_VOLUME:-${CONTAINER_VOLUME_DIR}}"`,
      'PGC_CONF_DIR="$PGC_VOLUME/conf"',
      'PGC_TLS_DIR="${PGC_TLS_DIR:-$PGC_CONF_DIR/tls}"',
    ]) {
      assert.ok(lib.includes(line), `lib.sh: ${line}`);
    }
  });

  it("is on by default", async () => {
    const { recorded, cluster } = await build("pgc-dflt", { replicas: 1, tls: undefined });
    assert.equal(
      recorded.filter((r) => /^node tls\.mjs /.test(String(r.inputs.create ?? ""))).length,
      3,
      "the CA and a certificate per node",
    );
    const node = recorded.find((r) => r.name === "pgc-dflt-primary" && r.custom)!;
    assert.equal(envOf(node).PGC_TLS, "on");
    assert.equal(await valueOf(cluster.caCertificate!), "CERT pgc-dflt-tls-ca");
    assert.match(await valueOf(cluster.connectionString), /\?sslmode=verify-full$/);
  });

  it("tls: false turns it off: no TLS step, upload or setting", async () => {
    const { recorded, cluster } = await build("pgc-notls", { replicas: 1, tls: false });
    assert.equal(
      recorded.filter((r) => /^node tls\.mjs /.test(String(r.inputs.create ?? ""))).length,
      0,
    );
    const node = recorded.find((r) => r.name === "pgc-notls-primary" && r.custom)!;
    assert.equal(envOf(node).PGC_TLS, undefined);
    assert.equal(cluster.caCertificate, undefined);
    assert.doesNotMatch(await valueOf(cluster.connectionString), /sslmode/);
  });
});

describe("backups across hosts (backup with hosts)", () => {
  const args = {
    replicas: 2,
    hosts: HOSTS.slice(0, 2),
    tls: true,
    backup: { enabled: true, host: "h2", port: 9400 },
  };

  it("puts the repository and its pgBackRest server on backup.host; every node reaches it, and it each node's server", async () => {
    const { recorded, registered, cluster } = await build("pgc-bh", args);
    assert.ok(cluster.backupRepository, "an escape hatch to the repository's container");
    const provider = (host: string) => (r: Recorded) =>
      r.provider?.includes(`::pgc-bh-${host}::`) === true;
    const repo = recorded.find((r) => r.name === "pgc-bh-repository" && r.custom) as Recorded;
    assert.equal(repo.type, "docker:index/container:Container");
    assert.ok(provider("h2")(repo), "on h2's engine");
    assert.deepEqual(plain(repo.inputs.ports), [
      { internal: 8432, external: 9400, ip: "10.213.77.12" },
    ]);
    assert.deepEqual(plain(repo.inputs.entrypoints), [
      "bash",
      "/opt/pg-cluster/node.sh",
      "repository",
    ]);
    const volume = recorded.find(
      (r) => r.name === "pgc-bh-backup" && r.type === "docker:index/volume:Volume",
    ) as Recorded;
    assert.ok(provider("h2")(volume), "the repository volume on h2");
    assert.deepEqual(plain(repo.inputs.volumes), [
      { volumeName: "pgc-bh-backup", containerPath: "/var/lib/pgbackrest" },
    ]);
    const env = envOf(repo);
    assert.equal(env.PGC_STANZA, "pgc-bh");
    assert.equal(
      env.PGC_REPOSITORY_CLIENTS,
      ["pgc-bh-primary", ...Array.from({ length: 16 }, (_, i) => `pgc-bh-replica-${i + 1}`)].join(
        " ",
      ),
      "the CN of every node the cluster can have (a scale leaves the container alone), none else",
    );
    const uploads = plain<{ file: string; content: unknown }[]>(repo.inputs.uploads);
    assert.deepEqual(
      uploads.map((u) => u.file),
      ["/opt/pg-cluster/node.sh", "/run/secrets/pg-cluster-tls"],
    );
    assert.ok(inputIsSecret(repo.inputs.uploads), "its key reaches the engine as a secret");
    assert.equal(
      plain(uploads[1].content),
      "CERT pgc-bh-tls-ca\nCERT pgc-bh-repository-tls\nKEY pgc-bh-repository-tls",
    );
    assert.doesNotMatch(JSON.stringify(plain(repo.inputs.envs)), /KEY|CERT/, "none in its env");

    // Its certificate names it and its host's address (as a DNS name too: pgBackRest checks those).
    const cert = recorded.find((r) => r.name === "pgc-bh-repository-tls") as Recorded;
    assert.deepEqual(JSON.parse(stepEnv(cert).PGC_TLS_DNS_NAMES), [
      "pgc-bh-repository",
      "10.213.77.12",
    ]);
    const nodeCert = recorded.find((r) => r.name === "pgc-bh-replica-1-tls") as Recorded;
    assert.ok(JSON.parse(stepEnv(nodeCert).PGC_TLS_DNS_NAMES).includes("10.213.77.12"));

    // The primary (h1) at h2's address and the published port; replica-1 (h2) by name; no mount.
    const expected = [
      ["pgc-bh-primary", "10.213.77.12", "9400", 9401],
      ["pgc-bh-replica-1", "pgc-bh-repository", "8432", 9402],
      ["pgc-bh-replica-2", "10.213.77.12", "9400", 9403],
    ] as const;
    for (const [name, host, port, published] of expected) {
      const c = recorded.find((r) => r.name === name && r.custom) as Recorded;
      assert.equal(envOf(c).PGC_BACKUP_REPO_HOST, host, name);
      assert.equal(envOf(c).PGC_BACKUP_REPO_PORT, port, name);
      const volumes = plain<{ containerPath: string }[]>(c.inputs.volumes);
      assert.deepEqual(
        volumes.map((v) => v.containerPath),
        ["/var/lib/postgresql/data"],
        `${name} mounts no repository`,
      );
      const ports = plain<{ internal: number; external: number }[]>(c.inputs.ports);
      assert.deepEqual(
        ports.map((p) => [p.internal, p.external]).at(-1),
        [8432, published],
        `${name}'s backup server published`,
      );
    }
    const step = recorded.find(
      (r) => r.name === "pgc-bh-backup" && r.type === "command:local:Command",
    ) as Recorded;
    assert.deepEqual(JSON.parse(stepEnv(step).PGC_REPOSITORY), {
      name: "pgc-bh-repository",
      dockerHost: HOSTS[1].dockerHost,
      servers: {
        "pgc-bh-primary": { host: "10.213.77.11", port: 9401 },
        "pgc-bh-replica-1": { host: "pgc-bh-replica-1", port: 8432 },
        "pgc-bh-replica-2": { host: "10.213.77.11", port: 9403 },
      },
    });
    const topology = recorded.find((r) => r.name === "pgc-bh-topology" && r.custom) as Recorded;
    const kind = (type: string, name: string) =>
      registered.find((r) => r.type === `pg-cluster:index:${type}` && r.name === name);
    assert.ok(
      kind("Topology", "pgc-bh-topology")?.dependsOn.includes(
        kind("BackupRepository", "pgc-bh-repository")?.resource as never,
      ),
      "the topology step (it makes the stanza) after the repository",
    );
    assert.deepEqual(
      Object.keys(JSON.parse(stepEnv(topology).PGC_TLS_FILES)),
      ["pgc-bh-primary", "pgc-bh-replica-1", "pgc-bh-replica-2"],
      "the steps install the nodes' certificates only",
    );
  });

  it("refuses it without tls, on an unknown host, or on the cluster's ports, naming each fix", () => {
    const message = configErrorOf(() =>
      validateClusterArgs({
        ...PASSWORDS,
        hosts: HOSTS.slice(0, 2),
        tls: false,
        primaryPort: 5432,
        backup: { enabled: true, host: "h9", port: 5431 },
      }),
    );
    assert.match(
      message,
      /backup = true: with hosts needs tls .*Fix: pulumi config set tls true, or pulumi config set backup false/,
    );
    assert.match(
      message,
      /backup\.host = "h9": is not a host \(hosts: h1, h2\)\. Fix: pulumi config set backupHost h1/,
    );
    assert.match(
      message,
      /backup\.port = 5431: publishes the repository at it and node i's backup server at port \+ 1 \+ i \(5431-5433\), but 5431, 5432, 5433 are the cluster's already\. Fix: pulumi config set backupPort 8432, or another port with 2 free after it/,
    );
  });
});

describe("restore across hosts (restore with hosts)", () => {
  it("reads the repository on the primary's host: the guard there, the mount on its nodes only", async () => {
    const { recorded } = await build("pgc-rh", {
      replicas: 2,
      hosts: HOSTS.slice(0, 2),
      primary: "pgc-rh-replica-1",
      restore: { repository: "/srv/pgbackrest/old" },
    });
    const guard = recorded.find((r) => r.name === "pgc-rh-guard" && r.custom) as Recorded;
    assert.equal(stepEnv(guard).PGC_RESTORE_DOCKER_HOST, HOSTS[1].dockerHost, "replica-1's");
    // replica-1 (the primary to be) on h2, the others on h1.
    for (const [name, mounted] of [
      ["pgc-rh-primary", false],
      ["pgc-rh-replica-1", true],
      ["pgc-rh-replica-2", false],
    ] as const) {
      const c = recorded.find((r) => r.name === name && r.custom) as Recorded;
      const volumes = plain<{ hostPath?: string; readOnly?: boolean }[]>(c.inputs.volumes);
      assert.equal(
        volumes.some((v) => v.hostPath === "/srv/pgbackrest/old" && v.readOnly === true),
        mounted,
        `${name} mounts the repository: ${mounted}`,
      );
      assert.equal(envOf(c).PGC_RESTORE_REPO !== undefined, mounted, name);
    }
  });
});
