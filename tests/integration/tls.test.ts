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
import { servesItsCertificate } from "../../assets/roles.mjs";
import { createCa, createServerCertificate } from "../../assets/tls.mjs";
import { SUPERUSER_PASSWORD, postgresBinDir, requireRoot } from "./localCluster";
import { EntrypointNode, LocalNodes, tlsBundle as bundle } from "./localNode2";
import { waitFor } from "./switchoverSteps";

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

/**
 * `ctl.sh tls` on nodes run by the real entrypoint (as the topology step and the first roll gate
 * use it): a node with PGC_TLS=on starts only once its certificate is installed; a standby
 * streams over TLS, verifying its upstream; a new CA and certificates are a reload (same
 * postmaster, the standby still streaming); removing TLS and installing it again, on running
 * servers, switches every connection, the standby's too, without a restart.
 */
describe("ctl.sh tls on nodes run by the entrypoint", { timeout: 180_000 }, () => {
  const nodes = new LocalNodes(["tls-a", "tls-b"], { env: { PGC_TLS: "on" } });
  const [a, b] = nodes.nodes;

  after(async () => {
    await nodes.destroy();
  });

  /** One query on `node` as the superuser: over TLS verified against `ca`, or plain (`false`). */
  async function query(node: EntrypointNode, ca: string | false, text: string) {
    const c = new pg.Client({
      host: "127.0.0.1",
      port: node.port,
      user: "postgres",
      password: SUPERUSER_PASSWORD,
      database: "mydb",
      connectionTimeoutMillis: 5000,
      ssl: ca === false ? false : { ca, rejectUnauthorized: true },
    });
    await c.connect();
    try {
      return (await c.query(text)).rows;
    } finally {
      await c.end();
    }
  }

  /** Whether node-b's WAL receiver streams from node-a, and on TLS (as node-a sees it). */
  async function walsender(ca: string | false) {
    const rows = await query(
      a,
      ca,
      `SELECT s.ssl FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid)
        WHERE r.application_name = 'tls-b' AND r.state = 'streaming'`,
    );
    return rows.length === 1 ? (rows[0].ssl as boolean) : undefined;
  }

  async function tlsVerb(node: EntrypointNode, input: string) {
    const run = await node.ctlWithInput(input, "tls");
    assert.equal(run.code, 0, run.stderr);
    return (JSON.parse(run.stdout) as { tls: string }).tls;
  }

  it("a node with TLS on waits for its certificate, then takes TLS connections only", async () => {
    const ca = await createCa({ commonName: "pg-cluster ctl test CA", days: 2 });
    a.launch();
    b.launch();
    await waitFor("tls-a to wait", 10_000, async () =>
      /empty volume/.test(a.log()) ? true : undefined,
    );
    assert.equal(await tlsVerb(a, await bundle(ca, "tls-a")), "installed");
    assert.equal(await tlsVerb(a, await bundle(ca, "tls-a")), "installed", "a new key: new files");
    assert.equal((await a.ctlOk("bootstrap-initdb")).tls, true);
    assert.deepEqual(
      await query(a, ca.certificate, "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"),
      [{ ssl: true }],
    );
    await assert.rejects(query(a, false, "SELECT 1"), /no encryption/);
    const otherCa = await createCa({ commonName: "pg-cluster ctl test CA", days: 2 });
    // The server sends no chain (no ssl_ca_file): the leaf is not signed by the CA trusted.
    await assert.rejects(
      query(a, otherCa.certificate, "SELECT 1"),
      /unable to verify the first certificate/,
    );

    assert.equal(await tlsVerb(b, await bundle(ca, "tls-b")), "installed");
    await b.ctlOk("bootstrap-clone", "127.0.0.1", String(a.port));
    assert.match(b.autoConf(), /sslmode=verify-full sslrootcert=\S+\/conf\/tls\/ca\.crt/);
    await waitFor("tls-b to stream on TLS", 20_000, async () =>
      (await walsender(ca.certificate)) === true ? true : undefined,
    );
    const key = fs.statSync(path.join(b.confDir, "tls", "server.key"));
    assert.equal(key.mode & 0o777, 0o600, "the key is the server user's alone");
  });

  it("a new CA and certificates are a reload: same servers, the standby still streams", async () => {
    const pids = [a.postmasterPid(), b.postmasterPid()];
    const ca = await createCa({ commonName: "pg-cluster ctl test CA 2", days: 2 });
    const oldCa = fs.readFileSync(path.join(a.confDir, "tls", "ca.crt"), "utf8");
    assert.equal(await tlsVerb(a, await bundle(ca, "tls-a")), "installed");
    assert.equal(await tlsVerb(b, await bundle(ca, "tls-b")), "installed");
    await query(a, ca.certificate, "CREATE TABLE rotated AS SELECT 1 AS n");
    await assert.rejects(
      query(a, oldCa, "SELECT 1"),
      /unable to verify the first certificate/,
      "the old CA no longer fits",
    );
    await waitFor("tls-b to replay the write", 20_000, async () =>
      (await query(b, ca.certificate, "SELECT to_regclass('rotated') IS NOT NULL AS t"))[0].t
        ? true
        : undefined,
    );
    assert.deepEqual([a.postmasterPid(), b.postmasterPid()], pids, "no restart");
    const same = await bundle(ca, "tls-b");
    assert.equal(await tlsVerb(b, same), "installed");
    assert.equal(await tlsVerb(b, same), "unchanged", "the same files again change nothing");

    // The topology step skips ctl.sh tls for a node that serves its bundle's certificate
    // already, and only then: the handshake's certificate is compared, byte for byte.
    const node = {
      name: b.name,
      host: "127.0.0.1",
      port: b.port,
      internalHost: b.name,
      slot: b.slot,
    };
    const serves = async (pem: string) => {
      process.env.PGC_TLS_FILES = JSON.stringify({ [b.name]: pem });
      try {
        return await servesItsCertificate(node);
      } finally {
        delete process.env.PGC_TLS_FILES;
      }
    };
    assert.equal(await serves(same), true, "the bundle it runs");
    assert.equal(await serves(await bundle(ca, "tls-b")), false, "a newer certificate of the CA");
    assert.equal(await serves(""), false, "no bundle");
  });

  it("TLS removed, then installed again, on running servers: the standby follows each time", async () => {
    const pids = [a.postmasterPid(), b.postmasterPid()];
    assert.equal(await tlsVerb(a, ""), "removed");
    assert.equal(await tlsVerb(b, ""), "removed");
    assert.match(
      b.autoConf(),
      /sslmode=prefer'/,
      "the standby's upstream connection: libpq's default",
    );
    await waitFor("tls-b to stream without TLS", 20_000, async () =>
      (await walsender(false)) === false ? true : undefined,
    );
    assert.equal((await b.ctlOk("status")).tls, false);

    const ca = await createCa({ commonName: "pg-cluster ctl test CA 3", days: 2 });
    assert.equal(await tlsVerb(a, await bundle(ca, "tls-a")), "installed");
    assert.equal(await tlsVerb(b, await bundle(ca, "tls-b")), "installed");
    await waitFor("tls-b to stream on TLS again", 20_000, async () =>
      (await walsender(ca.certificate)) === true ? true : undefined,
    );
    await assert.rejects(query(b, false, "SELECT 1"), /no encryption/);
    assert.deepEqual([a.postmasterPid(), b.postmasterPid()], pids, "no restart");
  });

  it("refuses input that is not three PEM blocks, changing nothing", async () => {
    const before = fs.readFileSync(path.join(a.confDir, "tls", "server.crt"), "utf8");
    const run = await a.ctlWithInput("-----BEGIN CERTIFICATE-----\nAAAA\n", "tls");
    assert.notEqual(run.code, 0);
    assert.match(run.stderr, /three PEM blocks on stdin .* nothing was changed/);
    assert.equal(fs.readFileSync(path.join(a.confDir, "tls", "server.crt"), "utf8"), before);
  });
});
