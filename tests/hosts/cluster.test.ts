/**
 * Several Docker hosts (issue 11), on three engines scripts/hosts.sh starts in network namespaces
 * (h1..h3 at 10.213.77.11-13), brought up once for the file. First the harness itself: every engine
 * answers with the images loaded, a container on one host reaches a port another host publishes
 * (arriving from the caller's host address, which per-host hba rules rely on), a cut link cuts only
 * that host. Then a real `pulumi up` of the program with `hosts`: replicas stream from the
 * primary's host address; TLS and backups turned on (a roll under a writer: the repository's
 * container on h1, the first backup read from a standby on another host), TLS renewed (a reload,
 * with a switchover); replication accepted from the cluster's hosts only, plain connections refused
 * with TLS, clients verify the nodes with the CA output; a switchover and a scale cross hosts
 * (archiving follows the primary to h3), a cut link heals, a new stack across two hosts is restored
 * from the repository, and destroy leaves nothing on any engine but the repository. Last, the
 * teardown leaves nothing behind. Traffic goes only to the namespaces' addresses.
 */
import * as assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { after, before, describe, it } from "node:test";
import pg from "pg";
import { CountingWriter, missingIds, waitCaughtUp } from "../lib/faults";
import { TestHost, dockerOn, hostsScript, testHosts } from "../lib/hosts";
import { ROUTER_IMAGE } from "../lib/majors";
import {
  IMAGE,
  REPLICATION_PASSWORD,
  SUPERUSER_PASSWORD,
  newStack,
  queryAt,
  servedCertificate,
  trustCa,
} from "../lib/stack";
import { CONTAINER_CA } from "../../assets/roles.mjs";

const ROOT = path.resolve(__dirname, "..", "..");
const HOSTS = testHosts(3);

// One set of hosts for the whole file: the harness's own checks, then the cluster across them,
// then the teardown's checks (a bring-up loads the images into every engine: worth doing once).
let upOutput = "";
before(() => {
  // A run that was killed may have left hosts behind: start from nothing.
  hostsScript("down");
  upOutput = hostsScript("up", "3", IMAGE, ROUTER_IMAGE);
});
after(() => {
  hostsScript("down");
});

/** Runs bash in a throw-away container of the node image on host `h`; its stdout, or its error. */
function bashOn(h: TestHost, script: string): { status: number | null; out: string } {
  const r = spawnSync(
    "docker",
    ["-H", h.dockerHost, "run", "--rm", "--entrypoint", "bash", IMAGE, "-c", script],
    { encoding: "utf8", timeout: 60_000 },
  );
  return { status: r.status, out: `${r.stdout}${r.stderr}`.trim() };
}

describe("several Docker hosts on one machine (scripts/hosts.sh)", () => {
  it("starts three engines, each on its own address with the node image loaded", () => {
    assert.deepEqual(
      upOutput
        .trim()
        .split("\n")
        .map((line) => line.split(" ").slice(0, 2)),
      [
        ["h1", "10.213.77.11"],
        ["h2", "10.213.77.12"],
        ["h3", "10.213.77.13"],
      ],
    );
    // (Not `.ID`: every engine on a machine reads the same /etc/docker/key.json.)
    const roots = HOSTS.map((h) => dockerOn(h, "info", "-f", "{{.DockerRootDir}}"));
    assert.deepEqual(
      roots,
      ["h1", "h2", "h3"].map((n) => `/var/lib/pg-cluster-hosts/${n}`),
    );
    for (const h of HOSTS) {
      assert.match(dockerOn(h, "image", "inspect", "-f", "{{.Id}}", IMAGE), /^sha256:/);
    }
  });

  it("a container on one host reaches a port published by another, from its host's address", () => {
    const [h1, h2, h3] = HOSTS;
    // On h1: a TCP service that answers each connection with the peer address it sees.
    const server = dockerOn(
      h1,
      "run",
      "-d",
      "--name",
      "peer-echo",
      "-p",
      `${h1.address}:17000:7000`,
      "--entrypoint",
      "perl",
      IMAGE,
      "-MIO::Socket::INET",
      "-e",
      '$s = IO::Socket::INET->new(LocalPort => 7000, Listen => 5, ReuseAddr => 1) or die; while ($c = $s->accept) { print $c $c->peerhost, "\\n"; close $c }',
    );
    assert.match(server, /^[0-9a-f]{64}$/);
    const ask = `for i in $(seq 50); do exec 3<>/dev/tcp/${h1.address}/17000 2>/dev/null && { cat <&3; exit 0; }; sleep 0.1; done; exit 1`;
    for (const from of [h2, h3]) {
      const r = bashOn(from, ask);
      assert.equal(r.status, 0, `${from.name} reaches ${h1.name}: ${r.out}`);
      assert.equal(r.out, from.address, `seen by ${h1.name} as coming from ${from.name}`);
    }
    // The machine itself (the tests, the Pulumi steps) reaches it on the bridge.
    const local = spawnSync("bash", ["-c", ask], { encoding: "utf8" });
    assert.equal(local.status, 0, local.stderr);
    assert.equal(local.stdout.trim(), "10.213.77.1");
  });

  it("cutting one host's link cuts that host only, and restoring it restores it", () => {
    const [h1, h2, h3] = HOSTS;
    const ask = `exec 3<>/dev/tcp/${h1.address}/17000 && cat <&3`;
    execFileSync("ip", ["link", "set", "pgc-h2-o", "down"]);
    try {
      assert.notEqual(bashOn(h2, `timeout 3 bash -c '${ask}'`).status, 0, "h2 is cut off");
      assert.equal(bashOn(h3, ask).out, h3.address, "h3 still reaches h1");
    } finally {
      execFileSync("ip", ["link", "set", "pgc-h2-o", "up"]);
    }
    const back = bashOn(
      h2,
      `for i in $(seq 50); do timeout 1 bash -c '${ask}' && exit 0; sleep 0.1; done; exit 1`,
    );
    assert.equal(back.out, h2.address, "h2 reaches h1 again");
    dockerOn(h1, "rm", "-f", "peer-echo");
  });
});

/** The client addresses the primary at `endpoint` streams to, by standby name. */
async function walsenders(endpoint: string): Promise<Record<string, string>> {
  const rows = await queryAt<{ application_name: string; client_addr: string }>(
    endpoint,
    "SELECT application_name, host(client_addr) AS client_addr FROM pg_stat_replication WHERE state = 'streaming' AND application_name NOT LIKE '%-control'",
  );
  return Object.fromEntries(rows.map((r) => [r.application_name, r.client_addr]));
}

/** A session to `endpoint`, or its refusal: "accepted", "on TLS" or "refused: <why>". */
async function session(
  endpoint: string,
  user: string,
  password: string,
  ssl: pg.ClientConfig["ssl"],
  database = "postgres",
): Promise<string> {
  const [host, port] = endpoint.split(":");
  const c = new pg.Client({ host, port: Number(port), user, password, database, ssl });
  c.on("error", () => {});
  try {
    await c.connect();
    const [{ ssl }] = (
      await c.query<{ ssl: boolean }>("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
    ).rows;
    return ssl ? "on TLS" : "accepted";
  } catch (err) {
    return `refused: ${(err as Error).message}`;
  } finally {
    await c.end().catch(() => {});
  }
}

describe("a cluster across three Docker hosts", { timeout: 900_000 }, () => {
  // Made without TLS; TLS is turned on (a roll), renewed (a reload) and turned off again below.
  const stack = newStack("hst", { hosts: JSON.stringify(HOSTS), tls: "false" });
  // Backups across the hosts come with TLS (they need it): the repository on h1, its server and
  // each node's backup server published in the stack's port block.
  const withTls = {
    tls: "true",
    tlsRenewal: "first",
    backup: "true",
    backupPort: String(stack.basePort + 50),
  };
  /** Each node's container id, on its host. */
  const containerIds = () =>
    Promise.all(
      [0, 1, 2].map((i) =>
        dockerOn(
          HOSTS[i],
          "inspect",
          "-f",
          "{{.Id}}",
          i === 0 ? `${c}-primary` : `${c}-replica-${i}`,
        ),
      ),
    );
  let ca = "";
  const outputsOf = { readWrite: "" };
  /** The writes acknowledged before the switchover to h3 (a restore must have every one). */
  let switchAcked: number[] = [];
  const c = stack.clusterName;
  const at = (host: number, node: number) => `${HOSTS[host].address}:${stack.basePort + node}`;
  // Round-robin: the primary on h1, replica-1 on h2, replica-2 on h3 (replica-3 on h1).
  const primary = at(0, 0);
  const replicas = [at(1, 1), at(2, 2)];

  after(async () => {
    try {
      await stack.remove();
    } finally {
      trustCa(undefined);
    }
  });

  it("1 + 2: each replica on its own host streams from the primary's host, seen from its host's address", async (t) => {
    const t0 = Date.now();
    const { outputs } = await stack.up();
    t.diagnostic(`pulumi up of 1 + 2 on three engines: ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    assert.equal(outputs.caCertificate, undefined, "no CA without TLS");
    for (const [i, host] of HOSTS.entries()) {
      const names = dockerOn(host, "ps", "--format", "{{.Names}}").split("\n").sort();
      const expected = [i === 0 ? `${c}-primary` : `${c}-replica-${i}`];
      if (i === 0) expected.push(`${c}-router`);
      assert.deepEqual(names, expected.sort(), `containers on ${host.name}`);
    }
    assert.deepEqual(await walsenders(primary), {
      [`${c}-replica-1`]: HOSTS[1].address,
      [`${c}-replica-2`]: HOSTS[2].address,
    });
    for (const r of replicas) {
      const [{ n }] = await queryAt<{ n: number }>(r, "SELECT count(*)::int AS n FROM wizards");
      assert.equal(n, 3, `the Wizards rows on ${r}`);
    }
    assert.equal(outputs.readWriteEndpoint, `${HOSTS[0].address}:${stack.basePort - 2}`);
    outputsOf.readWrite = outputs.readWriteEndpoint as string;
    assert.doesNotMatch(outputs.connectionString as string, /sslmode/);
    assert.deepEqual(outputs.replicaEndpoints, replicas);
    const [{ standby }] = await queryAt<{ standby: boolean }>(
      outputs.readOnlyEndpoint as string,
      "SELECT pg_is_in_recovery() AS standby",
    );
    assert.equal(standby, true, "the router on h1 reaches the standbys on h2 and h3");
  });

  it("turning TLS and backups on rolls the nodes one at a time under writes: no acknowledged write lost", async (t) => {
    const before = await containerIds();
    // The writer goes through the router, as libpq's sslmode=prefer would: TLS once offered.
    trustCa("prefer");
    const writer = new CountingWriter(outputsOf.readWrite, "tls_on_load");
    await writer.prepare();
    writer.start();
    const t0 = Date.now();
    const { outputs } = await stack.up(withTls);
    t.diagnostic(
      `pulumi up turning TLS and backups on (a roll of 3 nodes, a full backup): ${((Date.now() - t0) / 1000).toFixed(1)} s`,
    );
    await writer.stop();
    ca = outputs.caCertificate as string;
    assert.match(ca, /^-----BEGIN CERTIFICATE-----/);
    trustCa(ca);
    assert.match(outputs.connectionString as string, /\?sslmode=verify-full$/);
    const after = await containerIds();
    assert.ok(
      before.every((id, i) => id !== after[i]),
      "every container replaced",
    );
    assert.ok(writer.acked.length > 0, "the writer committed during the roll");
    assert.deepEqual(await missingIds(primary, "tls_on_load", writer.acked), []);
    assert.match(stack.lastLog(), /TLS certificate installed/, "the first gate installed TLS");
    // The repository on h1; the first backup read from a standby on another host, through its
    // pgBackRest server published there, by the repository's container.
    assert.deepEqual(dockerOn(HOSTS[0], "ps", "--format", "{{.Names}}").split("\n").sort(), [
      `${c}-primary`,
      `${c}-repository`,
      `${c}-router`,
    ]);
    const backup = outputs.backup as { node: string; fromStandby: boolean; type: string };
    assert.equal(backup.type, "full");
    assert.equal(backup.fromStandby, true, JSON.stringify(backup));
    assert.match(backup.node, new RegExp(`^${c}-replica-[12]$`), "a standby on h2 or h3");
    assert.match(
      dockerOn(HOSTS[0], "volume", "ls", "-q", "--filter", `label=pg-cluster.backup-of=${c}`),
      new RegExp(`^${c}-backup$`),
    );
  });

  it("TLS: every walsender, verify-full with the CA output; plain and wrong-CA clients refused", async () => {
    const senders = await queryAt<{ application_name: string; ssl: boolean; version: string }>(
      primary,
      `SELECT r.application_name, s.ssl, s.version FROM pg_stat_replication r
         JOIN pg_stat_ssl s USING (pid) WHERE r.application_name NOT LIKE '%-control' ORDER BY 1`,
    );
    assert.deepEqual(
      senders.map((r) => [r.application_name, r.ssl]),
      [
        [`${c}-replica-1`, true],
        [`${c}-replica-2`, true],
      ],
    );
    const [{ conninfo }] = await queryAt<{ conninfo: string }>(
      replicas[0],
      "SELECT conninfo FROM pg_stat_wal_receiver",
    );
    assert.match(conninfo, /sslmode=verify-full/, "the standby verifies its upstream");
    const su = (ssl: pg.ClientConfig["ssl"], endpoint = primary) =>
      session(endpoint, "postgres", SUPERUSER_PASSWORD, ssl, "mydb");
    assert.equal(await su({ ca }), "on TLS", "verify-full with the CA output");
    assert.equal(await su({ ca }, replicas[1]), "on TLS", "a replica on h3 by its address");
    assert.match(
      await su(false),
      /^refused: pg_hba.conf rejects connection for host "10\.213\.77\.1", user "postgres", database "mydb", no encryption/,
    );
    const other = spawnSync("node", [path.join(ROOT, "assets", "tls.mjs"), "ca"], {
      env: { ...process.env, PGC_TLS_CA_NAME: "another CA", PGC_TLS_DAYS: "1" },
      encoding: "utf8",
    });
    const wrongCa = (JSON.parse(other.stdout) as { certificate: string }).certificate;
    assert.match(await su({ ca: wrongCa }), /^refused: .*(self.signed|certificate)/i);
    // The router forwards bytes: a client through it verifies the node it lands on.
    const routed = outputsOf.readWrite;
    assert.equal(await su({ ca }, routed), "on TLS", "through the router");
  });

  it("accepts the replication role from the cluster's hosts only", async () => {
    // This machine is 10.213.77.1 on the hosts' bridge: not a host of the cluster.
    assert.match(
      await session(primary, "replicator", REPLICATION_PASSWORD, { ca }),
      /^refused: pg_hba.conf rejects connection for host "10\.213\.77\.1", user "replicator"/,
    );
    // From h2, through h1's published port, as its replica's connections arrive.
    const fromH2 = spawnSync(
      "docker",
      [
        "-H",
        HOSTS[1].dockerHost,
        "exec",
        "-e",
        `PGPASSWORD=${REPLICATION_PASSWORD}`,
        `${c}-replica-1`,
        "psql",
        "-Atc",
        "SELECT 1",
        `host=${HOSTS[0].address} port=${stack.basePort} user=replicator dbname=postgres sslmode=verify-full sslrootcert=${CONTAINER_CA}`,
      ],
      { encoding: "utf8" },
    );
    assert.equal(fromH2.stdout.trim(), "1", `from h2: ${fromH2.stderr}`);
  });

  it("a replica host cut off keeps the others serving, and catches up when its link returns", async (t) => {
    const writer = new CountingWriter(primary, "cut_load");
    await writer.prepare();
    writer.start();
    execFileSync("ip", ["link", "set", "pgc-h2-o", "down"]);
    try {
      await new Promise((r) => setTimeout(r, 3000));
      await waitCaughtUp(primary, [replicas[1]], 30_000);
    } finally {
      execFileSync("ip", ["link", "set", "pgc-h2-o", "up"]);
    }
    await writer.stop();
    const t0 = Date.now();
    await waitCaughtUp(primary, replicas, 120_000);
    t.diagnostic(`h2 caught up ${Date.now() - t0} ms after its link returned`);
    assert.ok(writer.acked.length > 0, "the primary took writes while h2 was cut off");
    for (const r of replicas) assert.deepEqual(await missingIds(r, "cut_load", writer.acked), []);
  });

  // One up for two changes that replace nothing (each up costs CI about 15 s of CPU here).
  it("switches the primary to replica-2 on h3 and renews the certificates (tlsRenewal) in one up: no container replaced, no acknowledged write lost", async () => {
    const endpoints = [primary, ...replicas];
    const before = await containerIds();
    const served = await Promise.all(endpoints.map(servedCertificate));
    const writer = new CountingWriter(primary, "switch_load");
    await writer.prepare();
    writer.start();
    await new Promise((r) => setTimeout(r, 1000));
    await writer.stop();
    withTls.tlsRenewal = "second";
    await stack.up({ ...withTls, primary: `${c}-replica-2` });
    assert.deepEqual(await containerIds(), before, "no container replaced");
    const now = await Promise.all(endpoints.map(servedCertificate));
    for (const [i, e] of endpoints.entries()) {
      assert.notEqual(now[i], served[i], `${e} serves its new certificate`);
    }
    const newPrimary = replicas[1];
    assert.deepEqual(await walsenders(newPrimary), {
      [`${c}-primary`]: HOSTS[0].address,
      [`${c}-replica-1`]: HOSTS[1].address,
    });
    const senders = await queryAt<{ ssl: boolean }>(
      newPrimary,
      `SELECT s.ssl FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid)
        WHERE r.state = 'streaming' AND r.application_name NOT LIKE '%-control'`,
    );
    assert.deepEqual(senders, [{ ssl: true }, { ssl: true }], "streaming on the new certificates");
    assert.deepEqual(await missingIds(newPrimary, "switch_load", writer.acked), []);
    switchAcked = writer.acked;
    // Archiving goes on from the new primary on h3, to the repository on h1.
    const [{ segment }] = await queryAt<{ segment: string }>(
      newPrimary,
      "SELECT pg_walfile_name(pg_switch_wal()) AS segment",
    );
    const deadline = Date.now() + 60_000;
    let archiver = { last: "", failed: 0 };
    while (Date.now() < deadline) {
      [archiver] = await queryAt<{ last: string; failed: number }>(
        newPrimary,
        "SELECT coalesce(last_archived_wal, '') AS last, failed_count::int AS failed FROM pg_stat_archiver",
      );
      if (archiver.last >= segment) break;
      await new Promise((r) => setTimeout(r, 500));
    }
    assert.ok(archiver.last >= segment, `${segment} archived from h3: ${JSON.stringify(archiver)}`);
    // Nothing left to do: no step, certificate or container of the backups changes at every up.
    await stack.expectNoChanges({ ...withTls, primary: `${c}-replica-2` });
  });

  // One up per change costs about 15 s of CPU here: the switchover back and the scale up share
  // one, as do the scale down and TLS off.
  it("switches back to the primary on h1 and scales 2 -> 3 (replica-3 on h1, by name) in one up", async () => {
    await stack.up({ ...withTls, replicas: "3" });
    const four = await walsenders(primary);
    assert.deepEqual(
      Object.keys(four).sort(),
      [1, 2, 3].map((n) => `${c}-replica-${n}`),
    );
    assert.equal(four[`${c}-replica-1`], HOSTS[1].address);
    assert.equal(four[`${c}-replica-2`], HOSTS[2].address);
    // On the primary's own host: by name on h1's network, so from its address there.
    assert.ok(
      !HOSTS.some((h) => h.address === four[`${c}-replica-3`]),
      `replica-3 streams over h1's network (${four[`${c}-replica-3`]})`,
    );
  });

  it("restores a new stack across h1 and h2 from the repository on h1: every write acknowledged before the switchover", async (t) => {
    // Its primary on h1, where the repository is (the guard reads it there); its replica on h2.
    const restored = newStack("hsr", {
      hosts: JSON.stringify(HOSTS.slice(0, 2)),
      replicas: "1",
      tls: "true",
      restoreRepository: `${c}-backup`,
    });
    try {
      const t0 = Date.now();
      await restored.up();
      t.diagnostic(
        `pulumi up of a restored 1 + 1 on two engines: ${((Date.now() - t0) / 1000).toFixed(1)} s`,
      );
      assert.ok(switchAcked.length > 0, "the switchover's writer committed");
      for (const [h, port] of [
        [0, restored.basePort],
        [1, restored.basePort + 1],
      ]) {
        const endpoint = `${HOSTS[h].address}:${port}`;
        assert.deepEqual(await missingIds(endpoint, "switch_load", switchAcked), [], endpoint);
      }
    } finally {
      await restored.remove();
    }
  });

  // Not turned off again here (a roll of every node costs CI over a minute): ctl.sh tls removes
  // TLS from running nodes in the integration layer, and the roll is the one turning it on took.
  it("scales 3 -> 1 under writes: replica-2's container and volume gone from h3, no write lost", async () => {
    const writer = new CountingWriter(primary, "scale_down_load");
    await writer.prepare();
    writer.start();
    await stack.up({ ...withTls, replicas: "1" });
    await writer.stop();
    assert.deepEqual(Object.keys(await walsenders(primary)), [`${c}-replica-1`]);
    assert.equal(dockerOn(HOSTS[2], "ps", "-aq"), "", "nothing left on h3");
    assert.equal(dockerOn(HOSTS[2], "volume", "ls", "-q"), "", "replica-2's volume removed");
    assert.ok(writer.acked.length > 0, "the writer committed during the up");
    assert.deepEqual(await missingIds(replicas[0], "scale_down_load", writer.acked), []);
  });

  it("destroy removes everything on every engine but the backup repository", async () => {
    await stack.destroy();
    // Kept, as on one host: a restore needs it most once the cluster is gone.
    assert.equal(dockerOn(HOSTS[0], "volume", "ls", "-q"), `${c}-backup`);
    dockerOn(HOSTS[0], "volume", "rm", `${c}-backup`);
    for (const host of HOSTS) {
      assert.equal(dockerOn(host, "ps", "-aq"), "", `no container on ${host.name}`);
      assert.equal(dockerOn(host, "volume", "ls", "-q"), "", `no volume on ${host.name}`);
      assert.equal(
        dockerOn(host, "network", "ls", "-q", "--filter", `label=pg-cluster.cluster=${c}`),
        "",
        `no network on ${host.name}`,
      );
    }
  });
});

describe("the hosts' teardown", () => {
  it("down removes every engine, namespace, link, firewall rule and data root", () => {
    hostsScript("down");
    assert.equal(hostsScript("list").trim(), "");
    assert.doesNotMatch(execFileSync("ip", ["netns", "list"], { encoding: "utf8" }), /pgc-h\d/);
    assert.doesNotMatch(execFileSync("ip", ["link"], { encoding: "utf8" }), /pgc-h/);
    assert.doesNotMatch(
      execFileSync("iptables", ["-S"], { encoding: "utf8" }),
      /pgc-hosts0/,
      "no firewall rule left",
    );
    assert.doesNotMatch(
      execFileSync("ps", ["-eo", "args"], { encoding: "utf8" }),
      /pg-cluster-hosts/,
      "no engine process left",
    );
    for (const dir of ["/var/lib/pg-cluster-hosts", "/run/pg-cluster-hosts"]) {
      assert.equal(fs.existsSync(dir), false, `${dir} removed`);
    }
    // And the main engine is untouched.
    assert.match(execFileSync("docker", ["info", "-f", "{{.ID}}"], { encoding: "utf8" }), /\S/);
  });
});
