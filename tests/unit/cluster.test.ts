import * as crypto from "node:crypto";
import * as assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { describe, it } from "node:test";
import * as command from "@pulumi/command";
import * as docker from "@pulumi/docker";
import * as pulumi from "@pulumi/pulumi";
import { PASSWORDS, build, inputIsSecret, isSecret, plain, recorded, valueOf } from "./harness";
import { DEFAULTS, PostgresCluster, replicationCapacity } from "../../components";
import { RELOADABLE_SETTINGS } from "../../components/settings";
import { ASSETS_DIR } from "../../components/assets";
import { healthPassword } from "../../components/router";

const CUSTOM = (r: { custom: boolean }) => r.custom;
const byType = <T extends { type: string }>(rs: T[], type: string): T[] =>
  rs.filter((r) => r.type === type);

describe("PostgresCluster resources", () => {
  for (const [replicas, expected] of [
    // containers: one per node and the router; commands: the version guard, the topology step,
    // the post-step, one roll gate per node and one slot lifetime per replica node
    [0, { containers: 2, volumes: 1, networks: 1, commands: 4 }],
    [1, { containers: 3, volumes: 2, networks: 1, commands: 6 }],
    [3, { containers: 5, volumes: 4, networks: 1, commands: 10 }],
  ] as const) {
    it(`creates the right resources for ${replicas} replica(s)`, async () => {
      const { recorded: rs } = await build(`count${replicas}`, { replicas });
      const custom = rs.filter(CUSTOM);
      assert.equal(byType(custom, "docker:index/container:Container").length, expected.containers);
      assert.equal(byType(custom, "docker:index/volume:Volume").length, expected.volumes);
      assert.equal(byType(custom, "docker:index/network:Network").length, expected.networks);
      assert.equal(byType(custom, "command:local:Command").length, expected.commands);
      assert.equal(
        custom.length,
        expected.containers + expected.volumes + expected.networks + expected.commands,
      );
    });
  }

  it("names every Docker object after the component, so two stacks never collide", async () => {
    const { recorded: rs } = await build("names", {
      replicas: 2,
      primaryPort: 6432,
      replicaBasePort: 6433,
    });
    const physical = (type: string) =>
      byType(rs, type)
        .map((r) => r.inputs.name)
        .sort();
    assert.deepEqual(physical("docker:index/network:Network"), ["names-net"]);
    assert.deepEqual(physical("docker:index/container:Container"), [
      "names-primary",
      "names-replica-1",
      "names-replica-2",
      "names-router",
    ]);
    assert.deepEqual(physical("docker:index/volume:Volume"), [
      "names-primary-data",
      "names-replica-1-data",
      "names-replica-2-data",
    ]);
    // A volume's inputs are as clusters made before roles could change had them: any change
    // (a label too) would replace the volume, and with it the node's data.
    for (const v of byType(rs, "docker:index/volume:Volume")) {
      assert.deepEqual(v.inputs.labels, [
        { label: "pg-cluster.cluster", value: "names" },
        {
          label: "pg-cluster.role",
          value: v.name === "names-primary-data" ? "primary" : "replica",
        },
      ]);
    }
    const logical = rs
      .filter(CUSTOM)
      .map((r) => r.name)
      .sort();
    assert.deepEqual(logical, [
      "names-check",
      "names-guard",
      "names-net",
      "names-primary",
      "names-primary-data",
      "names-primary-roll",
      "names-replica-1",
      "names-replica-1-data",
      "names-replica-1-roll",
      "names-replica-1-slot",
      "names-replica-2",
      "names-replica-2-data",
      "names-replica-2-roll",
      "names-replica-2-slot",
      "names-router",
      "names-topology",
    ]);
  });

  it("parents every child under the cluster, chains the node containers through roll gates, the post-step last", async () => {
    const { cluster, registered: rs } = await build("order", {
      replicas: 2,
      primaryPort: 7432,
      replicaBasePort: 7433,
    });
    const find = (type: string, name: string) => {
      const r = rs.find((x) => x.type === type && x.name === name);
      assert.ok(r, `${type} ${name} registered`);
      return r;
    };
    // Every registered resource descends from the cluster.
    for (const r of rs) {
      if (r.name === "order") continue;
      assert.ok(r.parent, `${r.name} has a parent`);
    }
    const primaryNode = find("pg-cluster:index:PostgresNode", "order-primary");
    assert.equal(primaryNode.parent, cluster);
    for (const n of [1, 2]) {
      const replica = find("pg-cluster:index:PostgresNode", `order-replica-${n}`);
      assert.equal(replica.parent, cluster);
      // The ordering sits on the container, so the component (and its volume) wait for the
      // version guard only, the first step: nothing is created on the engine before it passed.
      assert.deepEqual(
        replica.dependsOn,
        [cluster.guard],
        `replica ${n}'s component waits for the guard only`,
      );
      const container = find("docker:index/container:Container", `order-replica-${n}`);
      assert.equal(container.parent, cluster.replicas[n - 1]);
      // Recorded on the container itself, so the engine deletes it before its slot is dropped.
      assert.ok(
        container.dependsOn.includes(cluster.slots[n - 1]),
        `replica ${n} container after its slot`,
      );
      // No wait for the primary: a node's entrypoint waits for the topology step.
      assert.ok(
        !container.dependsOn.includes(cluster.primary),
        `replica ${n} container does not wait for the primary`,
      );
    }
    // The roll chain: each node's container after its gate, each gate after the container before
    // it (which also re-runs it when that container is replaced): the standbys, then the primary.
    const chain = [cluster.replicas[0], cluster.replicas[1], cluster.primary];
    assert.equal(cluster.rollGates.length, chain.length);
    for (const [k, node] of chain.entries()) {
      assert.ok(
        find("docker:index/container:Container", node.nodeName).dependsOn.includes(
          cluster.rollGates[k].step,
        ),
        `${node.nodeName}'s container after its gate`,
      );
      const gate = find("command:local:Command", `${node.nodeName}-roll`);
      const before = chain[k - 1];
      if (before) {
        assert.ok(gate.dependsOn.includes(before.container), `gate after ${before.nodeName}`);
      } else {
        assert.ok(!gate.dependsOn.some((d) => d instanceof docker.Container), "first gate");
      }
    }
    const check = find("pg-cluster:index:ReplicationCheck", "order-check");
    const guard = find("command:local:Command", "order-guard");
    assert.deepEqual(guard.dependsOn, [], "the version guard waits for nothing");
    const topology = find("pg-cluster:index:Topology", "order-topology");
    assert.ok(check.dependsOn.includes(cluster.topology), "post-step after the topology step");
    for (const node of [cluster.primary, ...cluster.replicas]) {
      assert.ok(check.dependsOn.includes(node), `post-step depends on ${node.nodeName}`);
      assert.ok(topology.dependsOn.includes(node), `topology step depends on ${node.nodeName}`);
      // Every node container is created or replaced only after the version guard passed (the
      // one command a container depends on).
      assert.ok(
        find("docker:index/container:Container", node.nodeName).dependsOn.some(
          (d) => d instanceof command.local.Command,
        ),
        `${node.nodeName}'s container after the version guard`,
      );
      // A volume waits for the guard only, so every volume is made as soon as it passed.
      const volume = find("docker:index/volume:Volume", `${node.nodeName}-data`);
      assert.deepEqual(volume.dependsOn, [cluster.guard], `${node.nodeName}'s volume: the guard`);
    }
    // The endpoints and URIs resolve only after the post-step: consumers start on a ready cluster.
    for (const [name, out] of Object.entries({
      primaryEndpoint: cluster.primaryEndpoint,
      replicaEndpoints: cluster.replicaEndpoints,
      internalPrimaryEndpoint: cluster.internalPrimaryEndpoint,
      internalReplicaEndpoints: cluster.internalReplicaEndpoints,
      connectionString: cluster.connectionString,
      readOnlyConnectionString: cluster.readOnlyConnectionString,
    })) {
      const deps = await (
        out as unknown as { allResources(): Promise<Set<pulumi.Resource>> }
      ).allResources();
      assert.ok(deps.has(cluster.check.step), `${name} depends on the post-step`);
    }
  });

  it("records a dependsOn given to the cluster on every child, so creates and deletes follow it", async () => {
    const before = new docker.Network("user-thing", { name: "user-thing" });
    const { cluster, registered: rs } = await build(
      "deps",
      { replicas: 2, primaryPort: 7532, replicaBasePort: 7533 },
      { dependsOn: [before] },
    );
    const children = rs.filter((r) => r.name !== "deps");
    // network; 3 nodes with volume and container, and their roll gates with a command each; 2
    // slots, the topology step and the post-step with a command each; the router with its
    // container; the version guard with its command
    assert.equal(children.length, 1 + 3 * 3 + 3 * 2 + 2 * 2 + 2 + 2 + 2 + 2);
    for (const r of children) {
      assert.ok(r.dependsOn.includes(before), `${r.type} ${r.name} depends on the user's resource`);
    }
    // The cluster's own orderings are kept beside it.
    const check = children.find(
      (r) => r.type === "command:local:Command" && r.name === "deps-check",
    );
    assert.ok(check?.dependsOn.includes(before));
    assert.ok(
      rs
        .find((r) => r.name === "deps-check" && r.type === "pg-cluster:index:ReplicationCheck")
        ?.dependsOn.includes(cluster.topology),
    );
  });

  it("uploads the same bundle to every node, which unpacks the real asset files byte for byte", async () => {
    const { recorded: rs } = await build("uploads", {
      replicas: 1,
      primaryPort: 8432,
      replicaBasePort: 8433,
    });
    const containers = byType(rs, "docker:index/container:Container").filter(
      (c) => c.name !== "uploads-router",
    );
    assert.equal(containers.length, 2);
    // One bundle for every node: a role change must not change a container's inputs.
    assert.deepEqual(containers[0].inputs.uploads, containers[1].inputs.uploads);
    for (const c of containers) {
      const role = c.name;
      // Secret as a whole: one of them is the passwords file.
      assert.ok(inputIsSecret(c.inputs.uploads), "the uploads reach the engine as a secret");
      const uploads = plain<
        { file: string; content: string; executable?: boolean; permissions?: string }[]
      >(c.inputs.uploads);
      assert.deepEqual(
        uploads.map((u) => [u.file, u.executable, u.permissions]),
        [
          ["/opt/pg-cluster/node.sh", true, undefined],
          ["/run/secrets/pg-cluster", undefined, "0600"],
        ],
      );
      // The passwords, one per line (lib.sh pgc_read_secrets reads them).
      assert.equal(
        plain(uploads[1].content),
        `${PASSWORDS.superuserPassword}\n${PASSWORDS.replicationPassword}\n`,
      );
      assert.deepEqual(c.inputs.entrypoints, ["bash", "/opt/pg-cluster/node.sh"]);
      // Unpack it as the container does (without running the entrypoint) and compare.
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "pgc-bundle-"));
      try {
        const r = spawnSync("bash", ["-c", uploads[0].content], {
          env: { ...process.env, PGC_HOME: dir, PGC_UNPACK_ONLY: "1" },
          encoding: "utf8",
        });
        assert.equal(r.status, 0, r.stderr);
        assert.deepEqual(fs.readdirSync(dir).sort(), [
          "ctl.sh",
          "entrypoint.sh",
          "healthcheck.sh",
          "lib.sh",
          "pg_hba.conf",
          "pg_ident.conf",
          "postgresql.conf",
          "repository.sh",
        ]);
        for (const f of fs.readdirSync(dir)) {
          assert.equal(
            fs.readFileSync(path.join(dir, f), "utf8"),
            fs.readFileSync(path.join(ASSETS_DIR, f), "utf8"),
            `${role}: ${f} unpacked verbatim`,
          );
          const executable = (fs.statSync(path.join(dir, f)).mode & 0o111) !== 0;
          assert.equal(executable, f.endsWith(".sh"), `${role}: ${f} executable only if a script`);
        }
      } finally {
        fs.rmSync(dir, { recursive: true, force: true });
      }
      // Nothing waits on the provider's once-a-second health poll: the post-step waits instead.
      assert.notEqual(c.inputs.wait, true);
      assert.deepEqual((c.inputs.healthcheck as { tests: string[] }).tests, [
        "CMD",
        "bash",
        "/opt/pg-cluster/healthcheck.sh",
      ]);
    }
  });

  it("publishes each node on its own port, on 127.0.0.1 by default", async () => {
    const { recorded: rs } = await build("ports", {
      replicas: 3,
      primaryPort: 9432,
      replicaBasePort: 9433,
    });
    const ports = Object.fromEntries(
      byType(rs, "docker:index/container:Container").map((c) => [c.inputs.name, c.inputs.ports]),
    );
    assert.deepEqual(ports, {
      "ports-primary": [{ internal: 5432, external: 9432, ip: "127.0.0.1" }],
      "ports-replica-1": [{ internal: 5432, external: 9433, ip: "127.0.0.1" }],
      "ports-replica-2": [{ internal: 5432, external: 9434, ip: "127.0.0.1" }],
      "ports-replica-3": [{ internal: 5432, external: 9435, ip: "127.0.0.1" }],
      // The router's read-write and read-only endpoints, by default just below the primary's.
      "ports-router": [
        { internal: 5432, external: 9430, ip: "127.0.0.1" },
        { internal: 5433, external: 9431, ip: "127.0.0.1" },
      ],
    });
  });

  it("gives in-network endpoints: each node's container name (its network alias) and port 5432", async () => {
    const { cluster, recorded: rs } = await build("innet", { replicas: 2 });
    assert.equal(await valueOf(cluster.internalPrimaryEndpoint), "innet-primary:5432");
    assert.deepEqual(await valueOf(cluster.internalReplicaEndpoints), [
      "innet-replica-1:5432",
      "innet-replica-2:5432",
    ]);
    // Each name is the alias the container answers to on the cluster's network.
    for (const c of byType(rs, "docker:index/container:Container")) {
      const aliases = (c.inputs.networksAdvanced as { aliases: string[] }[])[0].aliases;
      assert.deepEqual(aliases, [c.inputs.name]);
    }
  });

  it("keeps every password-derived value secret", async () => {
    const { cluster, recorded: rs } = await build("secrets", {
      replicas: 2,
      primaryPort: 10432,
      replicaBasePort: 10433,
    });
    assert.equal(await isSecret(cluster.connectionString), true);
    assert.equal(await isSecret(cluster.readOnlyConnectionString), true);
    assert.equal(await isSecret(cluster.multiHostReadOnlyConnectionString), true);
    assert.equal(await isSecret(cluster.primary.container.envs as pulumi.Output<unknown>), true);
    for (const r of cluster.replicas)
      assert.equal(await isSecret(r.container.envs as pulumi.Output<unknown>), true);
    for (const s of cluster.slots)
      assert.equal(await isSecret(s.dropStep.environment as pulumi.Output<unknown>), true);
    assert.equal(await isSecret(cluster.check.step.environment as pulumi.Output<unknown>), true);
    // No input reaches the engine with a password outside a secret (the router's check role's
    // included: its config upload carries it).
    const health = healthPassword(PASSWORDS.superuserPassword);
    const router = byType(rs, "docker:index/container:Container").find(
      (c) => c.name === "secrets-router",
    );
    assert.ok(
      inputIsSecret(router?.inputs.uploads) ||
        inputIsSecret((router?.inputs.uploads as unknown[])[0]),
    );
    for (const r of rs) {
      for (const [key, value] of Object.entries(r.inputs)) {
        if (inputIsSecret(value)) continue;
        for (const pw of [...Object.values(PASSWORDS), health]) {
          assert.ok(
            !JSON.stringify(value ?? null).includes(pw),
            `${r.name}.${key} carries a password in the clear`,
          );
        }
      }
    }
    // Values that are not secret never contain a password.
    for (const out of [cluster.primaryEndpoint, cluster.replicaEndpoints, cluster.networkName]) {
      assert.equal(await isSecret(out as pulumi.Output<unknown>), false);
      const text = JSON.stringify(await valueOf(out as pulumi.Output<unknown>));
      for (const pw of Object.values(PASSWORDS)) assert.ok(!text.includes(pw));
    }
    // The connection strings lead to the router: one host:port, which every client takes.
    assert.equal(
      await valueOf(cluster.connectionString),
      `postgresql://postgres:${PASSWORDS.superuserPassword}@localhost:10430/mydb`,
    );
    assert.equal(
      await valueOf(cluster.readOnlyConnectionString),
      `postgresql://postgres:${PASSWORDS.superuserPassword}@localhost:10431/mydb`,
    );
    assert.equal(
      await valueOf(cluster.multiHostReadOnlyConnectionString),
      `postgresql://postgres:${PASSWORDS.superuserPassword}@localhost:10433,localhost:10434/mydb?target_session_attrs=standby&load_balance_hosts=random`,
    );
  });

  it("gives every node the same environment keys and no password: any node may become the primary", async () => {
    const { recorded: rs } = await build("env", {
      replicas: 1,
      primaryPort: 11432,
      replicaBasePort: 11433,
    });
    const envOf = (name: string) =>
      byType(rs, "docker:index/container:Container").find((c) => c.inputs.name === name)?.inputs
        .envs;
    assert.ok(inputIsSecret(envOf("env-primary")), "node 0's envs reach the engine as a secret");
    assert.ok(inputIsSecret(envOf("env-replica-1")), "node 1's envs reach the engine as a secret");
    const node0 = plain<string[]>(envOf("env-primary"));
    const node1 = plain<string[]>(envOf("env-replica-1"));
    const keys = (env: string[]) => env.map((e) => e.slice(0, e.indexOf("="))).sort();
    assert.deepEqual(keys(node0), keys(node1));
    for (const env of [node0, node1]) {
      // Passwords come as a file (`docker inspect` prints the environment, `docker exec` hands
      // it to every shell), not even as a fast hash.
      for (const pw of Object.values(PASSWORDS)) {
        assert.ok(!env.some((e) => e.includes(pw)), `no password in ${env.join()}`);
        assert.ok(
          !env.some((e) =>
            e.includes(crypto.createHash("sha256").update(pw).digest("hex").slice(0, 16)),
          ),
        );
      }
      assert.ok(!env.some((e) => /PASSWORD/.test(e)), env.join());
      // No role and no peer: those would replace the container on a switchover or a scale.
      assert.ok(!env.some((e) => /^PGC_(ROLE|PRIMARY_HOST|PRIMARY_PORT)=/.test(e)), env.join());
    }
    assert.ok(node0.includes("PGC_SLOT_NAME=primary"));
    assert.ok(node1.includes("PGC_SLOT_NAME=replica_1"));
    assert.ok(node1.includes("PGC_NODE_NAME=env-replica-1"));

    // A new password changes what a roll gate compares (PGC_SPEC), and nothing else in the
    // environment: the node's container is replaced, one at a time.
    const rotated = await build("env", {
      replicas: 1,
      primaryPort: 11432,
      replicaBasePort: 11433,
      replicationPassword: "repl-Rotated-5e1d",
    });
    const envAfter = (name: string) =>
      plain<string[]>(
        byType(rotated.recorded, "docker:index/container:Container").find(
          (c) => c.inputs.name === name,
        )?.inputs.envs,
      );
    for (const [name, env] of [
      ["env-primary", node0],
      ["env-replica-1", node1],
    ] as const) {
      const changed = envAfter(name).filter((e) => !env.includes(e));
      assert.deepEqual(
        changed.map((e) => e.split("=")[0]),
        ["PGC_SPEC"],
        `${name}: only PGC_SPEC differs`,
      );
    }
  });

  it("moves the primary by config alone: no container or volume input changes, the steps re-run, the outputs follow", async () => {
    const args = { replicas: 2, primaryPort: 15432, replicaBasePort: 15433 };
    const before = await build("role", args);
    const after = await build("role", { ...args, primary: "role-replica-1" });
    const dockerInputs = (rs: typeof before.recorded) =>
      rs
        .filter((r) => r.type.startsWith("docker:"))
        .map((r) => [r.name, plain(r.inputs.envs), r.inputs.uploads, r.inputs.name])
        .sort();
    assert.deepEqual(dockerInputs(after.recorded), dockerInputs(before.recorded));
    const step = (rs: typeof before.recorded, name: string) =>
      byType(rs, "command:local:Command").find((c) => c.name === name);
    for (const name of ["role-topology", "role-check"]) {
      assert.deepEqual(step(before.recorded, name)?.inputs.triggers, [
        "role-primary",
        "role-primary-id",
        "role-replica-1-id",
        "role-replica-2-id",
        // The post-step also proves a replaced router.
        ...(name === "role-check" ? ["role-router-id"] : []),
      ]);
      assert.equal((step(after.recorded, name)?.inputs.triggers as string[])[0], "role-replica-1");
    }
    const env = plain<Record<string, string>>(
      step(after.recorded, "role-topology")?.inputs.environment,
    );
    assert.equal(env.PGC_DESIRED_PRIMARY, "role-replica-1");
    assert.equal(env.PGC_SWITCHOVER_MAX_LAG_BYTES, String(16 * 1024 * 1024));
    assert.equal(await valueOf(after.cluster.primaryEndpoint), "localhost:15433");
    assert.deepEqual(await valueOf(after.cluster.replicaEndpoints), [
      "localhost:15432",
      "localhost:15434",
    ]);
    assert.deepEqual(await valueOf(after.cluster.nodes), [
      {
        name: "role-primary",
        role: "replica",
        endpoint: "localhost:15432",
        internalEndpoint: "role-primary:5432",
      },
      {
        name: "role-replica-1",
        role: "primary",
        endpoint: "localhost:15433",
        internalEndpoint: "role-replica-1:5432",
      },
      {
        name: "role-replica-2",
        role: "replica",
        endpoint: "localhost:15434",
        internalEndpoint: "role-replica-2:5432",
      },
    ]);
  });

  it("rolls the desired primary last, and gives each gate the container the up will run", async () => {
    const { recorded: rs } = await build("chain", {
      replicas: 2,
      primaryPort: 17432,
      replicaBasePort: 17433,
      primary: "chain-replica-1",
    });
    const gates = byType(rs, "command:local:Command").filter((c) => c.name.endsWith("-roll"));
    const env = (name: string) =>
      plain<Record<string, string>>(gates.find((g) => g.name === name)?.inputs.environment);
    // The chain: chain-primary, chain-replica-2, then the desired primary chain-replica-1.
    assert.equal(env("chain-primary-roll").PGC_ROLL_AFTER, "");
    assert.equal(env("chain-replica-2-roll").PGC_ROLL_AFTER, "chain-primary");
    assert.equal(env("chain-replica-1-roll").PGC_ROLL_AFTER, "chain-replica-2");
    // A gate runs when its own node's container will change (a digest of it, secret), not when
    // the chain is re-ordered: its update only records the new order.
    const triggersOf = (rs: typeof gates, name: string) =>
      plain<string[]>(rs.find((g) => g.name === name)?.inputs.triggers);
    const gatesOf = async (extra: Record<string, unknown>) =>
      byType(
        (
          await build("chain", {
            replicas: 2,
            primaryPort: 17432,
            replicaBasePort: 17433,
            ...extra,
          })
        ).recorded,
        "command:local:Command",
      ).filter((c) => c.name.endsWith("-roll"));
    const defaultOrder = await gatesOf({});
    const newImage = await gatesOf({ primary: "chain-replica-1", image: "postgres:16.9" });
    for (const name of ["chain-primary-roll", "chain-replica-1-roll", "chain-replica-2-roll"]) {
      const triggers = gates.find((g) => g.name === name)?.inputs.triggers;
      assert.ok(
        inputIsSecret(triggers) || (Array.isArray(triggers) && triggers.every(inputIsSecret)),
        `${name}'s trigger is secret`,
      );
      assert.deepEqual(
        triggersOf(gates, name),
        triggersOf(defaultOrder, name),
        `${name}: a new order does not run it`,
      );
      assert.notDeepEqual(
        triggersOf(gates, name),
        triggersOf(newImage, name),
        `${name}: a new image runs it`,
      );
      assert.match(String(gates.find((g) => g.name === name)?.inputs.update), /"replaced":false/);
    }
    for (const node of ["chain-primary", "chain-replica-1", "chain-replica-2"]) {
      const gate = env(`${node}-roll`);
      assert.equal(gate.PGC_ROLL_NODE, node);
      assert.equal(gate.PGC_DESIRED_PRIMARY, "chain-replica-1");
      const container = byType(rs, "docker:index/container:Container").find(
        (c) => c.inputs.name === node,
      );
      const spec = JSON.parse(gate.PGC_ROLL_SPEC);
      assert.equal(spec.image, container?.inputs.image);
      assert.deepEqual(spec.env, plain(container?.inputs.envs));
      // What else replaces a container (its assets, its port) is in its environment as a digest.
      assert.equal(spec.env.filter((e: string) => /^PGC_SPEC=[0-9a-f]{16}$/.test(e)).length, 1);
    }
  });

  it("changes a reloadable setting without touching any container: only the topology step's settings differ", async () => {
    const args = { replicas: 2, primaryPort: 16432, replicaBasePort: 16433 };
    // One value per reloadable argument, other than its default.
    const changed = Object.fromEntries(Object.keys(RELOADABLE_SETTINGS).map((k) => [k, "2GB"]));
    const before = await build("reload", args);
    const after = await build("reload", { ...args, ...changed });
    const dockerInputs = (rs: typeof before.recorded) =>
      rs.filter((r) => r.type.startsWith("docker:")).map((r) => [r.name, plain(r.inputs)]);
    assert.deepEqual(dockerInputs(after.recorded), dockerInputs(before.recorded));
    const topology = (rs: typeof before.recorded) =>
      byType(rs, "command:local:Command").find((c) => c.name === "reload-topology");
    const settings = (rs: typeof before.recorded) =>
      JSON.parse(plain<Record<string, string>>(topology(rs)?.inputs.environment).PGC_SETTINGS);
    assert.deepEqual(
      settings(after.recorded),
      Object.fromEntries(Object.values(RELOADABLE_SETTINGS).map((name) => [name, "2GB"])),
    );
    assert.deepEqual(
      settings(before.recorded),
      Object.fromEntries(
        Object.entries(RELOADABLE_SETTINGS).map(([arg, name]) => [
          name,
          DEFAULTS[arg as keyof typeof RELOADABLE_SETTINGS],
        ]),
      ),
    );
    // The same triggers: the step re-runs because its environment changed, and replaces nothing.
    assert.deepEqual(
      topology(after.recorded)?.inputs.triggers,
      topology(before.recorded)?.inputs.triggers,
    );
  });

  it("does not change the primary's inputs when scaling 2 -> 3 (no restart)", async () => {
    const primaryInputs = async (replicas: number) => {
      const { recorded: rs } = await build("scale", {
        replicas,
        primaryPort: 12432,
        replicaBasePort: 12433,
      });
      return byType(rs, "docker:index/container:Container").find(
        (c) => c.inputs.name === "scale-primary",
      )?.inputs;
    };
    assert.deepEqual(await primaryInputs(2), await primaryInputs(3));
    assert.deepEqual(replicationCapacity(2), replicationCapacity(8));
    assert.notDeepEqual(replicationCapacity(8), replicationCapacity(9));
  });

  it("has one slot-drop step per replica node, run at delete time on every other node", async () => {
    const { recorded: rs } = await build("slots", {
      replicas: 3,
      primaryPort: 13432,
      replicaBasePort: 13433,
    });
    const steps = byType(rs, "command:local:Command").filter((c) => c.name.endsWith("-slot"));
    assert.equal(steps.length, 3);
    for (const [i, step] of steps.entries()) {
      assert.equal(step.inputs.delete, "node slot.mjs drop");
      assert.equal(step.inputs.dir, ASSETS_DIR);
      assert.ok(inputIsSecret(step.inputs.environment));
      const env = plain<Record<string, string>>(step.inputs.environment);
      assert.equal(env.PGC_SUPERUSER_PASSWORD, PASSWORDS.superuserPassword);
      assert.equal(env.PGC_SLOT_NAME, `replica_${i + 1}`);
      assert.deepEqual(
        JSON.parse(env.PGC_NODES).map((n: { name: string; port: number; slot: string }) => [
          n.name,
          n.port,
          n.slot,
        ]),
        [
          ["slots-primary", 13432, "primary"],
          ["slots-replica-1", 13433, "replica_1"],
          ["slots-replica-2", 13434, "replica_2"],
          ["slots-replica-3", 13435, "replica_3"],
        ],
      );
    }
  });

  it("re-runs the steps when the set of nodes changes, and asks for quorum sync when told", async () => {
    const { recorded: rs } = await build("sync", {
      replicas: 2,
      synchronousReplicas: 1,
      primaryPort: 14432,
      replicaBasePort: 14433,
    });
    const step = (name: string) => byType(rs, "command:local:Command").find((c) => c.name === name);
    const check = step("sync-check");
    const topology = step("sync-topology");
    assert.ok(check && topology);
    assert.equal(check.inputs.create, "node verify.mjs");
    assert.equal(topology.inputs.create, "node topology.mjs");
    for (const s of [check, topology]) {
      assert.deepEqual(s.inputs.triggers, [
        "sync-primary",
        "sync-primary-id",
        "sync-replica-1-id",
        "sync-replica-2-id",
        ...(s === check ? ["sync-router-id"] : []),
      ]);
      assert.ok(inputIsSecret(s.inputs.environment));
    }
    const env = plain<Record<string, string>>(topology.inputs.environment);
    assert.equal(env.PGC_SYNCHRONOUS_REPLICAS, "1");
    assert.equal(env.PGC_DESIRED_PRIMARY, "sync-primary");
    assert.deepEqual(JSON.parse(env.PGC_NODES), [
      {
        name: "sync-primary",
        host: "localhost",
        port: 14432,
        internalHost: "sync-primary",
        slot: "primary",
      },
      {
        name: "sync-replica-1",
        host: "localhost",
        port: 14433,
        internalHost: "sync-replica-1",
        slot: "replica_1",
      },
      {
        name: "sync-replica-2",
        host: "localhost",
        port: 14434,
        internalHost: "sync-replica-2",
        slot: "replica_2",
      },
    ]);
  });

  it("creates nothing when the input is invalid", async () => {
    const before = recorded.length;
    assert.throws(
      () => new PostgresCluster("bad", { ...PASSWORDS, replicas: -1 }),
      /replicas = -1/,
    );
    await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(recorded.slice(before).filter(CUSTOM), []);
  });
});
