/**
 * The TLS material (assets/tls.mjs) in a real PostgreSQL server on loopback: the server takes the
 * key and certificate, and clients that check the server's name against the CA (verify-full)
 * connect, by DNS name and by IP address, while other CAs and plain connections are refused.
 */
import * as assert from "node:assert/strict";
import { execFile, execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { promisify } from "node:util";
import { after, before, describe, it } from "node:test";
import pg from "pg";
import { createCa, createServerCertificate } from "../../assets/tls.mjs";
import { postgresBinDir, requireRoot } from "./localCluster";

const run = promisify(execFile);
const PASSWORD = "tls-it-password";

/** A port nothing listens on now. */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer().listen(0, "127.0.0.1", () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
    server.on("error", reject);
  });
}

/** Runs a PostgreSQL program as the postgres user: initdb and the server refuse root. */
function asPostgres(program: string, args: string[]) {
  return run("runuser", ["-u", "postgres", "--", path.join(postgresBinDir(), program), ...args]);
}

describe("TLS material in PostgreSQL 15", () => {
  requireRoot();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "pgc-tls-"));
  const data = path.join(dir, "data");
  const caFile = path.join(dir, "root.crt");
  const otherCaFile = path.join(dir, "other-root.crt");
  let port = 0;
  let ca = "";
  let otherCa = "";

  before(async () => {
    const postgres = { uid: owner("-u"), gid: owner("-g") };
    fs.chownSync(dir, postgres.uid, postgres.gid);
    const pwfile = path.join(dir, "pwfile");
    fs.writeFileSync(pwfile, PASSWORD, { mode: 0o600 });
    fs.chownSync(pwfile, postgres.uid, postgres.gid);
    const [caPem, otherCaPem] = await Promise.all([
      createCa({ commonName: "pg-cluster TLS test CA", days: 2 }),
      createCa({ commonName: "pg-cluster TLS test CA", days: 2 }),
      asPostgres("initdb", ["-D", data, "-U", "postgres", "--pwfile", pwfile, "--no-sync"]),
    ]);
    ca = caPem.certificate;
    otherCa = otherCaPem.certificate;
    fs.writeFileSync(caFile, ca);
    fs.writeFileSync(otherCaFile, otherCa);
    const server = await createServerCertificate({
      ca: caPem,
      commonName: "primary",
      dnsNames: ["localhost"],
      ipAddresses: ["127.0.0.1"],
      days: 1,
    });
    // The server refuses a key others can read: 0600, owned by the user it runs as.
    const files = { "server.crt": server.certificate, "server.key": server.key, "root.crt": ca };
    for (const [name, content] of Object.entries(files)) {
      const file = path.join(data, name);
      fs.writeFileSync(file, content, { mode: 0o600 });
      fs.chownSync(file, postgres.uid, postgres.gid);
    }
    port = await freePort();
    fs.appendFileSync(
      path.join(data, "postgresql.conf"),
      [
        "listen_addresses = '127.0.0.1'",
        `port = ${port}`,
        `unix_socket_directories = '${dir}'`,
        "ssl = on",
        "ssl_cert_file = 'server.crt'",
        "ssl_key_file = 'server.key'",
        "ssl_ca_file = 'root.crt'",
        "",
      ].join("\n"),
    );
    fs.writeFileSync(
      path.join(data, "pg_hba.conf"),
      "hostssl all all 127.0.0.1/32 scram-sha-256\nhostnossl all all all reject\n",
    );
    const log = path.join(dir, "server.log");
    await asPostgres("pg_ctl", ["-D", data, "-l", log, "-w", "-t", "30", "start"]).catch((err) => {
      throw new Error(`the server did not start: ${err}\n${fs.readFileSync(log, "utf8")}`);
    });
  });

  after(async () => {
    try {
      if (fs.existsSync(path.join(data, "postmaster.pid"))) {
        await asPostgres("pg_ctl", ["-D", data, "-m", "immediate", "-w", "stop"]);
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  /** A pg client reaching the server at 127.0.0.1 with `ssl`. */
  function client(ssl: pg.ClientConfig["ssl"]): pg.Client {
    const config = { host: "127.0.0.1", port, user: "postgres", database: "postgres" };
    return new pg.Client({ ...config, password: PASSWORD, ssl, connectionTimeoutMillis: 5000 });
  }

  /** psql with sslmode=verify-full against `host`, trusting the CA in `rootCert`. */
  function psql(host: string, rootCert: string) {
    const conninfo = `host=${host} port=${port} user=postgres dbname=postgres sslmode=verify-full sslrootcert=${rootCert}`;
    const sql = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()";
    return run(path.join(postgresBinDir(), "psql"), [conninfo, "-Atc", sql], {
      env: { ...process.env, PGPASSWORD: PASSWORD },
    });
  }

  it("lets a client that verifies the server's name against the CA in, over TLS", async () => {
    const c = client({ ca, rejectUnauthorized: true, servername: "localhost" });
    await c.connect();
    try {
      const { rows } = await c.query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()");
      assert.deepEqual(rows, [{ ssl: true }]);
    } finally {
      await c.end();
    }
  });

  it("is refused by a client trusting another CA, or expecting another name", async () => {
    const otherCaClient = client({
      ca: otherCa,
      rejectUnauthorized: true,
      servername: "localhost",
    });
    // Not "unable to verify the leaf": OpenSSL in the server sends the chain up to the root it
    // finds in ssl_ca_file, a self-signed certificate this client does not trust.
    await assert.rejects(otherCaClient.connect(), { code: "SELF_SIGNED_CERT_IN_CHAIN" });
    const otherName = client({ ca, rejectUnauthorized: true, servername: "replica-9" });
    await assert.rejects(otherName.connect(), { code: "ERR_TLS_CERT_ALTNAME_INVALID" });
  });

  it("refuses a connection without TLS", async () => {
    await assert.rejects(client(false).connect(), /pg_hba.conf rejects connection .*no encryption/);
  });

  it("lets psql in with sslmode=verify-full by DNS name and by IP address", async () => {
    for (const host of ["localhost", "127.0.0.1"]) {
      const { stdout } = await psql(host, caFile);
      assert.equal(stdout, "t\n", host);
    }
    await assert.rejects(psql("localhost", otherCaFile), /certificate verify failed/);
  });
});

/** The postgres user's id (`-u`) or group id (`-g`). */
function owner(flag: "-u" | "-g"): number {
  return Number(execFileSync("id", [flag, "postgres"], { encoding: "utf8" }));
}
