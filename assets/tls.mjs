// @ts-check
/**
 * The cluster's TLS material (issue 11, TLS on every connection): a private CA, and for each node
 * a certificate signed by it. The component runs it in local.Command steps, whose stdout Pulumi
 * keeps secret in the state:
 *   node tls.mjs ca    (env: PGC_TLS_CA_NAME, PGC_TLS_DAYS)
 *   node tls.mjs node  (env: PGC_TLS_CA_CERT, PGC_TLS_CA_KEY, PGC_TLS_NODE_NAME, PGC_TLS_DAYS,
 *                       PGC_TLS_DNS_NAMES and PGC_TLS_IP_ADDRESSES as JSON arrays)
 * Either prints one JSON object, {"certificate": PEM, "key": PEM}; keys go nowhere else.
 */
// @peculiar/x509 2 needs a Reflect metadata polyfill (for its tsyringe container) and ships none.
import "reflect-metadata";
import * as x509 from "@peculiar/x509";
import { realpathSync } from "node:fs";
import { isIP } from "node:net";
import { pathToFileURL } from "node:url";
import { jsonEnv, log, requireEnv } from "./pgnode.mjs";

/**
 * A certificate and its private key (PKCS#8, which PostgreSQL's ssl_key_file accepts), as PEM:
 * what components/tls.ts parses from this program's output.
 * @typedef {import("../components/tls").KeyPair} Pem
 */

const { crypto } = globalThis;
x509.cryptoProvider.set(crypto);

const KEY_ALGORITHM = { name: "ECDSA", namedCurve: "P-256" };
/** Backdates every certificate, so a node whose clock is a little behind still accepts it. */
const CLOCK_SKEW_MS = 5 * 60 * 1000;
const DAY_MS = 24 * 60 * 60 * 1000;

/**
 * A self-signed CA that may sign node certificates only (path length 0).
 * @param {{ commonName: string, days: number }} args
 * @returns {Promise<Pem>}
 */
export async function createCa({ commonName, days }) {
  const keys = await crypto.subtle.generateKey(KEY_ALGORITHM, true, ["sign", "verify"]);
  const usages = x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign;
  return issue(keys, commonName, days, [
    new x509.BasicConstraintsExtension(true, 0, true),
    new x509.KeyUsagesExtension(usages, true),
    await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
  ]);
}

/**
 * A node's certificate, signed by `ca`, for every DNS name and IP address clients reach it by.
 * It is for TLS clients too: a standby is a client of its upstream.
 * @param {{ ca: Pem, commonName: string, dnsNames: string[], ipAddresses: string[],
 *   days: number }} args
 * @returns {Promise<Pem>}
 */
export async function createServerCertificate({ ca, commonName, dnsNames, ipAddresses, days }) {
  // @peculiar/x509 2.2.0 mis-encodes an IPv6 address with a dotted IPv4 tail (::ffff:1.2.3.4).
  const bad = ipAddresses.filter((ip) => isIP(ip) === 0 || (isIP(ip) === 6 && ip.includes(".")));
  if (bad.length > 0) {
    throw new Error(`ipAddresses (PGC_TLS_IP_ADDRESSES): ${JSON.stringify(bad)} are not IPs.`);
  }
  if (dnsNames.length + ipAddresses.length === 0) {
    throw new Error("no dnsNames or ipAddresses (PGC_TLS_DNS_NAMES, PGC_TLS_IP_ADDRESSES).");
  }
  const caCertificate = new x509.X509Certificate(ca.certificate);
  const caKey = x509.PemConverter.decodeFirst(ca.key);
  const keys = await crypto.subtle.generateKey(KEY_ALGORITHM, true, ["sign", "verify"]);
  const names = [
    ...dnsNames.map((value) => ({ type: /** @type {const} */ ("dns"), value })),
    ...ipAddresses.map((value) => ({ type: /** @type {const} */ ("ip"), value })),
  ];
  const { serverAuth, clientAuth } = x509.ExtendedKeyUsage;
  const extensions = [
    new x509.BasicConstraintsExtension(false),
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
    new x509.ExtendedKeyUsageExtension([serverAuth, clientAuth]),
    new x509.SubjectAlternativeNameExtension(names),
    await x509.AuthorityKeyIdentifierExtension.create(caCertificate.publicKey),
    await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
  ];
  return issue(keys, commonName, days, extensions, {
    name: caCertificate.subjectName,
    key: await crypto.subtle.importKey("pkcs8", caKey, KEY_ALGORITHM, false, ["sign"]),
  });
}

/** @typedef {import("node:crypto").webcrypto.CryptoKey} CryptoKey */

/**
 * A certificate for `keys` named `commonName`, signed by `issuer` (by `keys` without one), and
 * its key. The serial number is the library's: 16 random bytes as a positive integer.
 * @param {{ publicKey: CryptoKey, privateKey: CryptoKey }} keys
 * @param {string} commonName @param {number} days @param {x509.Extension[]} extensions
 * @param {{ name: x509.Name, key: CryptoKey }} [issuer]
 * @returns {Promise<Pem>}
 */
async function issue(keys, commonName, days, extensions, issuer) {
  const now = Date.now();
  const subject = new x509.Name([{ CN: [commonName] }]);
  const certificate = await x509.X509CertificateGenerator.create({
    subject,
    issuer: issuer?.name ?? subject,
    publicKey: keys.publicKey,
    signingKey: issuer?.key ?? keys.privateKey,
    signingAlgorithm: { name: "ECDSA", hash: "SHA-256" },
    notBefore: new Date(now - CLOCK_SKEW_MS),
    notAfter: new Date(now + days * DAY_MS),
    extensions,
  });
  const key = await crypto.subtle.exportKey("pkcs8", keys.privateKey);
  return {
    certificate: certificate.toString("pem"),
    key: x509.PemConverter.encode(key, "PRIVATE KEY"),
  };
}

/** @param {string} name @returns {number} */
function daysEnv(name) {
  const raw = requireEnv(name);
  if (!/^[1-9][0-9]*$/.test(raw))
    throw new Error(`${name} is "${raw}": give a whole number of days, 1 or more.`);
  return Number(raw);
}

/** @param {string} name @param {string} label PEM label; the value is not echoed (a key). */
function pemEnv(name, label) {
  const value = requireEnv(name);
  if (!value.includes(`-----BEGIN ${label}-----`)) {
    throw new Error(`${name} holds no PEM ${label}: give what "node tls.mjs ca" printed.`);
  }
  return value;
}

/** @param {string} name @returns {string[]} */
function namesEnv(name) {
  const value = jsonEnv(name);
  if (!Array.isArray(value) || !value.every((v) => typeof v === "string" && v !== "")) {
    throw new Error(`${name} is ${JSON.stringify(value)}: give a JSON array of names.`);
  }
  return value;
}

/** @param {string | undefined} command @returns {Promise<Pem>} */
async function run(command) {
  if (command === "ca") {
    return createCa({ commonName: requireEnv("PGC_TLS_CA_NAME"), days: daysEnv("PGC_TLS_DAYS") });
  }
  if (command !== "node") throw new Error(`usage: node tls.mjs ca|node (got "${command}")`);
  return createServerCertificate({
    ca: {
      certificate: pemEnv("PGC_TLS_CA_CERT", "CERTIFICATE"),
      key: pemEnv("PGC_TLS_CA_KEY", "PRIVATE KEY"),
    },
    commonName: requireEnv("PGC_TLS_NODE_NAME"),
    dnsNames: namesEnv("PGC_TLS_DNS_NAMES"),
    ipAddresses: namesEnv("PGC_TLS_IP_ADDRESSES"),
    days: daysEnv("PGC_TLS_DAYS"),
  });
}

// Run as a program, not imported (by the tests). argv[1] is as typed, import.meta.url the real
// path: they differ when the package is reached through a symlink (npm link, a file: dependency).
const invoked = process.argv[1] && pathToFileURL(realpathSync(process.argv[1])).href;
// @ts-expect-error -- tsconfig checks as CommonJS (module: commonjs); node runs this as ESM.
if (import.meta.url === invoked) {
  run(process.argv[2]).then(
    (pem) => process.stdout.write(`${JSON.stringify(pem)}\n`),
    (err) => {
      log(`ERROR: ${err instanceof Error ? err.message : String(err)}`);
      process.exit(1);
    },
  );
}
