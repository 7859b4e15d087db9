// @ts-check
/**
 * Shared by the host-side programs (verify.mjs, topology.mjs, slot.mjs): read the environment the
 * PostgresCluster component sets, and connect to a node with bounded retries.
 * Logs go to stderr; stdout is reserved for the JSON a program prints.
 */
import pg from "pg";

/**
 * Where the host-side programs reach a node (`host:port`, as published), its name on the cluster
 * network and its slot's name; with several Docker hosts, its host's name (`site`) and engine
 * (`dockerHost`, for the docker CLI).
 * @typedef {{ name: string, host: string, port: number, internalHost?: string, slot?: string,
 *   site?: string, dockerHost?: string }} NodeAddress
 */

/**
 * The environment for a docker CLI call to the engine at `dockerHost` (undefined: the engine of
 * this process's DOCKER_HOST, the docker provider's own).
 * @param {string | undefined} dockerHost @returns {NodeJS.ProcessEnv}
 */
export function dockerEnv(dockerHost) {
  return dockerHost ? { ...process.env, DOCKER_HOST: dockerHost } : process.env;
}

/** @param {string} name @returns {string} */
export function requireEnv(name) {
  const value = process.env[name];
  if (value === undefined || value === "") {
    throw new Error(
      `environment variable ${name} is not set; the PostgresCluster component sets it.`,
    );
  }
  return value;
}

/** @param {string} name @returns {any} */
export function jsonEnv(name) {
  const raw = requireEnv(name);
  try {
    return JSON.parse(raw);
  } catch (err) {
    throw new Error(`environment variable ${name} is not valid JSON: ${String(err)}`);
  }
}

/** @param {string} message */
export function log(message) {
  process.stderr.write(`${new Date().toISOString()} pg-cluster: ${message}\n`);
}

/**
 * What an up did to a node, judged against `since` (the previous verified up's marker):
 * `created` (its data directory was written since: a new node or a re-clone), `replaced` (its
 * container was created since, on data it already had), `restarted` (its server started since),
 * `reloaded` (its configuration was reloaded since), or `nothing`.
 * Data written before its own container was created is not this up's: the previous up's marker
 * can precede the end of that up's last clone (a release whose post-step did not wait for the
 * clones to finish before writing it), and that node is then replaced by this up, not created.
 * `data` is PG_VERSION's modification time, which has whole seconds only.
 * @param {{ data: Date, started: Date, loaded: Date, container?: Date }} t
 * @param {Date | null} since
 * @returns {"created" | "replaced" | "restarted" | "reloaded" | "nothing"}
 */
export function changeSince(t, since) {
  if (!since) return "created";
  const containerSecond = t.container && Math.floor(t.container.getTime() / 1000) * 1000;
  const newData = t.data > since && (!containerSecond || t.data.getTime() >= containerSecond);
  if (newData) return "created";
  if (t.container && t.container > since) return "replaced";
  if (t.started > since) return "restarted";
  if (t.loaded > since) return "reloaded";
  return "nothing";
}

/** @param {number} ms */
export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** A time in seconds since the epoch (pgBackRest's timestamps) as ISO 8601. @param {number} seconds */
export const isoFromSeconds = (seconds) => new Date(seconds * 1000).toISOString();

/**
 * Connects to a node as the superuser, retrying every 50 ms until the deadline: a node that is
 * still starting refuses connections for a moment, which is not an error yet.
 * @param {NodeAddress} node
 * @param {number | (() => Promise<number>)} deadline epoch milliseconds, or a function giving the
 *   current deadline (one that moves while the node shows progress)
 * @param {Partial<pg.ClientConfig>} [options] more client settings (a query timeout, say)
 * @returns {Promise<pg.Client>}
 */
export async function connect(node, deadline, options = {}) {
  const currentDeadline = typeof deadline === "number" ? async () => deadline : deadline;
  let lastError = "";
  for (;;) {
    const client = new pg.Client({
      host: node.host,
      port: node.port,
      user: requireEnv("PGC_SUPERUSER"),
      password: requireEnv("PGC_SUPERUSER_PASSWORD"),
      database: requireEnv("PGC_DATABASE"),
      connectionTimeoutMillis: 3000,
      application_name: "pg-cluster-post-step",
      // Notices a peer that vanished (a killed container) instead of waiting on it forever.
      keepAlive: true,
      // With TLS, verify-full against the cluster's CA: the certificate names the host we dial.
      ...(process.env.PGC_TLS_CA ? { ssl: { ca: process.env.PGC_TLS_CA } } : {}),
      ...options,
    });
    // A server that goes away mid-session emits an error event: without a listener it would
    // end the program; the query in flight rejects anyway, and the caller decides.
    client.on("error", (err) => log(`${node.name}: ${err.message}`));
    try {
      await client.connect();
      return client;
    } catch (err) {
      await client.end().catch(() => {});
      lastError = err instanceof Error ? err.message : String(err);
      // Wrong credentials will not fix themselves: fail at once.
      if (/password authentication failed|no pg_hba.conf entry/.test(lastError)) break;
      if (Date.now() >= (await currentDeadline())) break;
      await sleep(50);
    }
  }
  throw new Error(
    `cannot connect to ${node.name} at ${node.host}:${node.port}: ${lastError} (its container's log: docker logs ${node.name})`,
  );
}
