/**
 * The TLS material generator (assets/tls.mjs), checked with Node's own X.509 parser rather than
 * the library that wrote it; extension flags Node does not show are read back with that library.
 */
import * as assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { X509Certificate, createPrivateKey } from "node:crypto";
import * as path from "node:path";
import { before, describe, it } from "node:test";
// Before @peculiar/x509, which needs it (assets/tls.mjs says why).
import "reflect-metadata";
import * as x509 from "@peculiar/x509";
import { createCa, createServerCertificate } from "../../assets/tls.mjs";

const TLS = path.join(__dirname, "..", "..", "assets", "tls.mjs");
const DAY_MS = 24 * 60 * 60 * 1000;
const DNS_NAMES = ["replica-1", "replica-1.pgc.internal"];
const IP_ADDRESSES = ["10.0.0.5", "fd00::5"];

type Pem = { certificate: string; key: string };

/** Runs the CLI with exactly `env` (nothing inherited, so no stray PGC_* variable counts). */
function cli(command: string, env: Record<string, string>) {
  return new Promise<{ status: number | null; stdout: string; stderr: string }>((resolve) => {
    const child = spawn(process.execPath, [TLS, command], { env });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    child.on("close", (status) => resolve({ status, stdout, stderr }));
  });
}

/** Milliseconds between `date` (an X509Certificate validFrom/validTo) and now + `offsetMs`. */
function offBy(date: string, offsetMs: number): number {
  return Math.abs(Date.parse(date) - (Date.now() + offsetMs));
}

let ca: Pem;
let otherCa: Pem;
let leaf: Pem;
before(async () => {
  [ca, otherCa] = await Promise.all([
    createCa({ commonName: "pg-cluster test CA", days: 365 }),
    createCa({ commonName: "pg-cluster test CA", days: 365 }),
  ]);
  leaf = await createServerCertificate({
    ca,
    commonName: "replica-1",
    dnsNames: DNS_NAMES,
    ipAddresses: IP_ADDRESSES,
    days: 30,
  });
});

describe("TLS material", () => {
  it("makes a CA that is self-signed, a CA, valid from 5 minutes ago for the days asked", () => {
    const cert = new X509Certificate(ca.certificate);
    assert.equal(cert.ca, true);
    assert.equal(cert.verify(cert.publicKey), true);
    assert.ok(offBy(cert.validFrom, -5 * 60 * 1000) < 60_000, cert.validFrom);
    assert.ok(offBy(cert.validTo, 365 * DAY_MS) < 60_000, cert.validTo);
    assert.notEqual(cert.serialNumber, new X509Certificate(otherCa.certificate).serialNumber);
    assert.equal(cert.checkPrivateKey(createPrivateKey(ca.key)), true);

    const parsed = new x509.X509Certificate(ca.certificate);
    const constraints = parsed.getExtension(x509.BasicConstraintsExtension);
    assert.deepEqual([constraints?.ca, constraints?.critical], [true, true]);
    const usage = parsed.getExtension(x509.KeyUsagesExtension);
    const signing = x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign;
    assert.deepEqual([usage?.usages, usage?.critical], [signing, true]);
    assert.deepEqual(parsed.signatureAlgorithm, { name: "ECDSA", hash: { name: "SHA-256" } });
    assert.equal(cert.publicKey.asymmetricKeyDetails?.namedCurve, "prime256v1");
  });

  it("signs a node certificate that the CA verifies and another CA does not", () => {
    const cert = new X509Certificate(leaf.certificate);
    assert.equal(cert.verify(new X509Certificate(ca.certificate).publicKey), true);
    assert.equal(cert.verify(new X509Certificate(otherCa.certificate).publicKey), false);
    assert.equal(cert.ca, false);
    assert.equal(cert.checkIssued(new X509Certificate(ca.certificate)), true);
    assert.ok(offBy(cert.validTo, 30 * DAY_MS) < 60_000, cert.validTo);
  });

  it("names every DNS name and IP address given, and no other", () => {
    const cert = new X509Certificate(leaf.certificate);
    for (const name of DNS_NAMES) assert.equal(cert.checkHost(name), name);
    for (const ip of IP_ADDRESSES) assert.equal(cert.checkIP(ip), ip);
    assert.equal(cert.checkHost("replica-2"), undefined);
    assert.equal(cert.checkIP("10.0.0.6"), undefined);
  });

  it("is for both ends of a connection, a standby being a client of its upstream", () => {
    const cert = new X509Certificate(leaf.certificate);
    assert.deepEqual(cert.keyUsage, ["1.3.6.1.5.5.7.3.1", "1.3.6.1.5.5.7.3.2"]);
    const parsed = new x509.X509Certificate(leaf.certificate);
    const usage = parsed.getExtension(x509.KeyUsagesExtension);
    assert.deepEqual([usage?.usages, usage?.critical], [x509.KeyUsageFlags.digitalSignature, true]);
    const caKeyId = new x509.X509Certificate(ca.certificate).getExtension(
      x509.SubjectKeyIdentifierExtension,
    )?.keyId;
    assert.equal(parsed.getExtension(x509.AuthorityKeyIdentifierExtension)?.keyId, caKeyId);
  });

  it("gives the node's key as PKCS#8 PEM, the key of its certificate", () => {
    assert.match(leaf.key, /^-----BEGIN PRIVATE KEY-----\n/);
    const cert = new X509Certificate(leaf.certificate);
    assert.equal(cert.checkPrivateKey(createPrivateKey(leaf.key)), true);
    assert.equal(cert.checkPrivateKey(createPrivateKey(ca.key)), false);
  });

  it("refuses a certificate with no name, or an address that is not an IP", async () => {
    const args = { ca, commonName: "n", days: 1 };
    await assert.rejects(createServerCertificate({ ...args, dnsNames: [], ipAddresses: [] }), {
      message: "no dnsNames or ipAddresses (PGC_TLS_DNS_NAMES, PGC_TLS_IP_ADDRESSES).",
    });
    await assert.rejects(
      createServerCertificate({ ...args, dnsNames: ["n"], ipAddresses: ["n", "::ffff:1.2.3.4"] }),
      { message: 'ipAddresses (PGC_TLS_IP_ADDRESSES): ["n","::ffff:1.2.3.4"] are not IPs.' },
    );
  });
});

describe("TLS material program (node assets/tls.mjs)", () => {
  const nodeEnv = (caPem: Pem) => ({
    PGC_TLS_CA_CERT: caPem.certificate,
    PGC_TLS_CA_KEY: caPem.key,
    PGC_TLS_NODE_NAME: "primary",
    PGC_TLS_DNS_NAMES: JSON.stringify(["primary"]),
    PGC_TLS_IP_ADDRESSES: JSON.stringify(["172.18.0.2"]),
    PGC_TLS_DAYS: "7",
  });

  it("prints one JSON object for the CA, then one for a node signed by it", async () => {
    const made = await cli("ca", { PGC_TLS_CA_NAME: "pg-cluster CA", PGC_TLS_DAYS: "10" });
    assert.equal(made.status, 0, made.stderr);
    const caPem: Pem = JSON.parse(made.stdout);
    assert.deepEqual(Object.keys(caPem), ["certificate", "key"]);
    const caCert = new X509Certificate(caPem.certificate);
    assert.equal(caCert.subject, "CN=pg-cluster CA");
    assert.ok(offBy(caCert.validTo, 10 * DAY_MS) < 60_000, caCert.validTo);

    const node = await cli("node", nodeEnv(caPem));
    assert.equal(node.status, 0, node.stderr);
    const nodePem: Pem = JSON.parse(node.stdout);
    assert.deepEqual(Object.keys(nodePem), ["certificate", "key"]);
    const cert = new X509Certificate(nodePem.certificate);
    assert.equal(cert.verify(caCert.publicKey), true);
    assert.equal(cert.checkHost("primary"), "primary");
    assert.equal(cert.checkIP("172.18.0.2"), "172.18.0.2");
    assert.equal(cert.checkPrivateKey(createPrivateKey(nodePem.key)), true);
    assert.equal(node.stderr, "");
  });

  it("fails with exit 1 naming a missing or bad variable, and prints no key", async () => {
    const missing: Record<string, string> = nodeEnv(ca);
    delete missing.PGC_TLS_NODE_NAME;
    const cases: [Record<string, string>, RegExp][] = [
      [missing, /ERROR: environment variable PGC_TLS_NODE_NAME is not set/],
      [{ ...nodeEnv(ca), PGC_TLS_DAYS: "0" }, /ERROR: PGC_TLS_DAYS is "0": give a whole number/],
      [{ ...nodeEnv(ca), PGC_TLS_DNS_NAMES: "primary" }, /PGC_TLS_DNS_NAMES is not valid JSON/],
      [
        { ...nodeEnv(ca), PGC_TLS_IP_ADDRESSES: '["primary"]' },
        /PGC_TLS_IP_ADDRESSES\): \["primary"\] are not IPs/,
      ],
      [
        { ...nodeEnv(ca), PGC_TLS_CA_KEY: ca.certificate },
        /PGC_TLS_CA_KEY holds no PEM PRIVATE KEY/,
      ],
    ];
    await Promise.all(
      cases.map(async ([env, message]) => {
        const r = await cli("node", env);
        assert.equal(r.status, 1, r.stderr);
        assert.match(r.stderr, message);
        assert.equal(r.stdout, "");
        assert.doesNotMatch(r.stderr, /PRIVATE KEY-----/);
      }),
    );
    const usage = await cli("server", {});
    assert.equal(usage.status, 1);
    assert.match(usage.stderr, /usage: node tls.mjs ca\|node \(got "server"\)/);
  });
});
