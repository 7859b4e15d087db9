/**
 * TLS for the test clients: which CA a client of an endpoint verifies the node against (the
 * `caCertificate` output of the stack publishing that port, verify-full), as `pg` and libpq take it.
 */
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import pg from "pg";

/**
 * The CA the test clients verify servers against when no stack's CA covers the endpoint: none
 * (plain), a CA, or "prefer": TLS without verification where the server offers it, else plain
 * (libpq's default), for clients that watch TLS being turned on or off.
 */
let trustedCa: string | undefined;

/**
 * Makes every later {@link connectTo} use TLS, verify-full against `ca` (undefined: no TLS;
 * "prefer": as libpq's sslmode=prefer), where no stack's CA covers the endpoint.
 */
export function trustCa(ca: string | undefined): void {
  trustedCa = ca;
}

/** The CAs of the stacks this process brought up, by the range of host ports each publishes on. */
const stackCas: { from: number; to: number; ca: string | undefined }[] = [];

/**
 * Records the CA (the `caCertificate` output, undefined without TLS) of the stack whose host ports
 * are `from`..`to`: clients of those ports verify its nodes against it (verify-full).
 */
export function trustStackCa(from: number, to: number, ca: string | undefined): void {
  const i = stackCas.findIndex((r) => r.from === from);
  if (i >= 0) stackCas.splice(i, 1);
  stackCas.push({ from, to, ca });
}

/** The CA the clients of `endpoint` verify it against, "prefer", or undefined (plain). */
export function caFor(endpoint: string): string | undefined {
  const port = Number(endpoint.split(":").pop());
  const range = stackCas.find((r) => port >= r.from && port <= r.to);
  return range ? range.ca : trustedCa;
}

/** `pg`'s `ssl` option for a client of `endpoint` (see {@link trustStackCa}, {@link trustCa}). */
export function sslFor(endpoint: string): pg.ClientConfig["ssl"] {
  const ca = caFor(endpoint);
  if (ca === "prefer") return { rejectUnauthorized: false };
  return ca ? { ca } : false;
}

/** libpq's environment for a client (psql) of `endpoint`: verify-full against its stack's CA. */
export function libpqTlsEnv(endpoint: string): Record<string, string> {
  const ca = caFor(endpoint);
  if (!ca || ca === "prefer") return {};
  const file = path.join(
    os.tmpdir(),
    `pgc-test-ca-${crypto.createHash("sha256").update(ca).digest("hex").slice(0, 16)}.crt`,
  );
  if (!fs.existsSync(file)) fs.writeFileSync(file, ca);
  return { PGSSLMODE: "verify-full", PGSSLROOTCERT: file };
}
