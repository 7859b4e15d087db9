/**
 * The multi-host harness (issue 11): three Docker engines on this machine, each in its own
 * network namespace, joined by a bridge on a test-only subnet (scripts/hosts.sh). Checked here
 * before the component is placed across them: every engine answers with the node image loaded,
 * a container on one host reaches a port another host publishes (arriving from the caller's
 * host address, which per-host hba rules rely on), a cut link cuts only that host, and the
 * teardown leaves nothing behind. Traffic goes only to the namespaces' addresses.
 */
import * as assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import { after, before, describe, it } from "node:test";
import { TestHost, dockerOn, hostsScript } from "../lib/hosts";

const IMAGE = process.env.PG_CLUSTER_E2E_IMAGE ?? "pg-cluster-postgres:15";

/** Runs bash in a throw-away container of the node image on host `h`; its stdout, or its error. */
function bashOn(h: TestHost, script: string): { status: number | null; out: string } {
  const r = spawnSync(
    "docker",
    ["-H", h.dockerHost, "run", "--rm", "--entrypoint", "bash", IMAGE, "-c", script],
    { encoding: "utf8", timeout: 60_000 },
  );
  return { status: r.status, out: `${r.stdout}${r.stderr}`.trim() };
}

describe("several Docker hosts on one machine (scripts/hosts.sh)", { timeout: 600_000 }, () => {
  let hosts: TestHost[] = [];

  before(() => {
    // A run that was killed may have left hosts behind: start from nothing.
    hostsScript("down");
    hosts = hostsScript("up", "3", IMAGE)
      .trim()
      .split("\n")
      .map((line) => {
        const [name, address, socket] = line.split(" ");
        return { name, address, dockerHost: `unix://${socket}` };
      });
  });
  after(() => {
    hostsScript("down");
  });

  it("starts three engines, each on its own address with the node image loaded", () => {
    assert.deepEqual(
      hosts.map((h) => [h.name, h.address]),
      [
        ["h1", "10.213.77.11"],
        ["h2", "10.213.77.12"],
        ["h3", "10.213.77.13"],
      ],
    );
    // (Not `.ID`: every engine on a machine reads the same /etc/docker/key.json.)
    const roots = hosts.map((h) => dockerOn(h, "info", "-f", "{{.DockerRootDir}}"));
    assert.deepEqual(
      roots,
      ["h1", "h2", "h3"].map((n) => `/var/lib/pg-cluster-hosts/${n}`),
    );
    for (const h of hosts) {
      assert.match(dockerOn(h, "image", "inspect", "-f", "{{.Id}}", IMAGE), /^sha256:/);
    }
  });

  it("a container on one host reaches a port published by another, from its host's address", () => {
    const [h1, h2, h3] = hosts;
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
    const [h1, h2, h3] = hosts;
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
  });

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
