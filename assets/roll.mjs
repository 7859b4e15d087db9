// @ts-check
/**
 * A roll gate (docs/design/changes-without-outage.md): one runs before each node's container,
 * and the containers are chained through them (standbys first, the desired primary last), so an
 * up that replaces every container replaces them one at a time:
 *
 * 1. The node before this one in the chain (PGC_ROLL_AFTER), just created or replaced, is
 *    awaited: a standby until it streams and has replayed what the primary had written when the
 *    gate started; then it is back in the router's read-only backend. An empty volume (a new
 *    cluster: the topology step bootstraps it later) or a held node passes at once.
 * 2. If this node's container is about to be replaced (its running image or environment differs
 *    from PGC_ROLL_SPEC): a standby is drained from the router's read-only backend; the primary
 *    hands its role to the most caught-up standby by a planned switchover (the topology step
 *    makes it a standby again after its replacement, and moves the primary back if the config
 *    names it). With no other node, the replacement is a restart of the only node.
 *
 * The first gate also gives the running nodes the TLS the up asks for (turning it on or off), and
 * makes the primary use the passwords the up carries (a password change).
 *
 * Environment: as topology.mjs (PGC_NODES, credentials, PGC_DESIRED_PRIMARY, PGC_ROUTER,
 * PGC_TIMEOUT_SECONDS, PGC_SWITCHOVER_MAX_LAG_BYTES, PGC_HEALTH_PASSWORD, PGC_CTL), and
 *   PGC_REPLICATION_PASSWORD  the replication role's password
 *   PGC_TLS_FILES     with TLS: each node's CA, certificate and key (topology.mjs)
 *   PGC_ROLL_NODE     the node whose container comes after this gate
 *   PGC_ROLL_AFTER    the node whose container came before it ("" for the first)
 *   PGC_ROLL_SPEC     {"image", "env": ["KEY=value", ...]}: the container the up will run
 *   PGC_DRAIN_SECONDS how long sessions on a standby may finish before its replacement (default 5)
 *   PGC_INSPECT_ARGV  optional JSON argv taking a container name as its last argument and printing
 *                     what `docker container inspect` prints (tests)
 * Prints one JSON line: {"node", "replaced", "actions": [...]}.
 */
import { spawn } from "node:child_process";
import { dockerEnv, jsonEnv, log, requireEnv } from "./pgnode.mjs";
import {
  act,
  actions,
  ctl,
  copyAssets,
  ctlWithInput,
  drainStandby,
  ensureHealthRole,
  installTls,
  lsnBytes,
  observe,
  query,
  sqlState,
  switchover,
  tellRouter,
  waitUntil,
  writableNode,
} from "./roles.mjs";

/** @typedef {import("./roles.mjs").TopologyNode} TopologyNode */

/**
 * The node's container as Docker runs it, or null when there is none.
 * @param {TopologyNode} node @returns {Promise<{ image: string, env: string[] } | null>}
 */
function runningContainer(node) {
  const name = node.name;
  const custom = process.env.PGC_INSPECT_ARGV ? jsonEnv("PGC_INSPECT_ARGV") : undefined;
  const argv = custom ?? ["docker", "container", "inspect"];
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0], [...argv.slice(1), name], {
      env: dockerEnv(node.dockerHost),
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    let err = "";
    child.stdout.on("data", (d) => (out += d));
    child.stderr.on("data", (d) => (err += d));
    child.on("error", reject);
    child.on("close", (code) => {
      if (code !== 0) {
        if (/no such (container|object)/i.test(err)) return resolve(null);
        return reject(new Error(`inspecting container ${name} failed: ${err.trim()}`));
      }
      const [c] = JSON.parse(out);
      resolve(c ? { image: c.Config.Image, env: c.Config.Env ?? [] } : null);
    });
  });
}

/**
 * Whether the container Docker runs differs from the one the up will run: by image name, or by
 * any of our (PGC_*) variables; the image's own variables (PATH, PG_MAJOR) are not ours.
 * @param {{ image: string, env: string[] }} running @param {{ image: string, env: string[] }} wanted
 */
function differs(running, wanted) {
  const ours = (/** @type {string[]} */ env) => env.filter((e) => e.startsWith("PGC_")).sort();
  const a = ours(running.env);
  const b = ours(wanted.env);
  return running.image !== wanted.image || a.length !== b.length || a.some((e, i) => e !== b[i]);
}

/**
 * Waits until the node before this gate is back: a standby streaming and caught up with what the
 * primary had written when this started, then in the router's read-only backend again.
 * @param {TopologyNode} node @param {TopologyNode[]} nodes @param {number} timeoutMs
 */
async function settle(node, nodes, timeoutMs) {
  // A new container with TLS starts its server only once its certificate is there: on a volume
  // that had none (a node of a release before TLS), it is installed now, not after the roll.
  if (process.env.PGC_TLS === "on") {
    await installTls(node).catch((err) =>
      log(`${node.name}: TLS not installed now: ${err.message}`),
    );
  }
  const seen = await observe(node, Date.now() + timeoutMs);
  if (!seen.sql) return; // empty (a new cluster) or held: the topology step takes it from here
  if (!seen.sql.inRecovery) return;
  const primary = await writableNode(nodes);
  if (!primary) {
    // A lost primary, or an unfinished switchover: there is nothing to catch up with, and the
    // topology step (after every container) is what makes a node writable again.
    act(`no node is writable: ${node.name} is not awaited (the topology step takes it from here)`);
    return;
  }
  if (!(await hasCtl(primary))) {
    // A stack made before roles (v0.1.0): its primary is not set up for the new standbys, and
    // cannot be switched over. Every container is replaced without waiting, and the topology step
    // converges the cluster after the last one, as an upgrade did before the roll.
    act(
      `${primary.name} runs a release without ctl.sh: ${node.name} is not awaited (the topology step converges the cluster after the last container)`,
    );
    return;
  }
  const [p] = await query(primary, "SELECT pg_current_wal_lsn()::text AS lsn");
  const target = lsnBytes(p.lsn);
  await waitUntil(
    `${node.name} to stream from ${primary.name} and replay ${p.lsn}`,
    timeoutMs,
    async () => {
      const s = await sqlState(node);
      return (
        s?.receiver?.status === "streaming" && !!s.replayLsn && lsnBytes(s.replayLsn) >= target
      );
    },
  );
  await tellRouter(`set server standbys/${node.name} state ready`);
  act(`${node.name} streams from ${primary.name} and replayed ${p.lsn}`);
}

/** Whether the node's container has ctl.sh (releases before roles did not). @param {TopologyNode} node */
async function hasCtl(node) {
  try {
    await ctl(node, "status");
    return true;
  } catch (err) {
    log(`${node.name}: ctl.sh status failed: ${err instanceof Error ? err.message : String(err)}`);
    return false;
  }
}

/**
 * The standby to hand the primary's role to: the desired primary when it is a streaming standby,
 * else the standby that has replayed the most.
 * @param {TopologyNode} p @param {TopologyNode[]} nodes @returns {Promise<TopologyNode | undefined>}
 */
async function successor(p, nodes) {
  const desired = requireEnv("PGC_DESIRED_PRIMARY");
  const standbys = [];
  for (const n of nodes) {
    if (n === p) continue;
    const s = await sqlState(n);
    if (s?.inRecovery && s.receiver?.status === "streaming" && s.replayLsn) {
      standbys.push({ n, replay: lsnBytes(s.replayLsn) });
    }
  }
  standbys.sort((a, b) => (a.replay === b.replay ? 0 : a.replay > b.replay ? -1 : 1));
  return standbys.find((x) => x.n.name === desired)?.n ?? standbys[0]?.n;
}

/**
 * Before the first container of a roll is replaced: every running node gets the TLS the up asks
 * for (PGC_TLS_FILES, or none), by `ctl.sh tls` and a reload, primary first. Turning TLS on, the
 * old primary then offers TLS with a certificate the new standbys verify; turning it off, the old
 * nodes take plain connections from the new ones. A node's ctl.sh from a release without the
 * verb runs this release's, copied in. Nodes that do not answer are left to the topology step.
 * @param {TopologyNode[]} nodes
 */
async function ensureTls(nodes) {
  const states = await Promise.all(
    nodes.map(async (n) => ({ n, status: await ctl(n, "status").catch(() => null) })),
  );
  const running = states.filter((x) => x.status?.running);
  running.sort((a, b) => Number(a.status.standby) - Number(b.status.standby));
  for (const { n, status } of running) {
    const script = "tls" in status ? undefined : await copyAssets(n);
    await installTls(n, script);
  }
}

/**
 * Before the first container of a roll is replaced: when the nodes refuse the superuser password
 * the up carries (a password changed in config), the running primary is given both new passwords
 * (`ctl.sh set-passwords`, over its local socket), and the router's check role its new one.
 * Otherwise the first new container could not reach the primary, and the router (replaced with
 * the new check password) would find no node up. Nothing happens when a node accepts the
 * password, or when none answers at all (a new cluster).
 * @param {TopologyNode[]} nodes
 */
async function ensurePasswords(nodes) {
  let refused = false;
  for (const n of nodes) {
    try {
      await query(n, "SELECT 1");
      return;
    } catch (err) {
      if (/password authentication failed/.test(String(err))) refused = true;
    }
  }
  if (!refused) return;
  for (const n of nodes) {
    const status = await ctl(n, "status");
    if (status.volume !== "populated" || !status.running || status.standby || status.hold) continue;
    const passwords = [
      requireEnv("PGC_SUPERUSER_PASSWORD"),
      requireEnv("PGC_REPLICATION_PASSWORD"),
    ];
    await ctlWithInput(n, `${passwords.join("\n")}\n`, "set-passwords");
    act(
      `${n.name}: the superuser's and the replication role's passwords changed (the standbys follow by replication)`,
    );
    await ensureHealthRole(n);
    return;
  }
  throw new Error(
    "the nodes refuse the superuser password and no running primary was found to change it on; nothing was replaced. Check the nodes (docker ps, docker logs), then pulumi up again.",
  );
}

async function main() {
  /** @type {TopologyNode[]} */
  const nodes = jsonEnv("PGC_NODES");
  const byName = (/** @type {string} */ name) => {
    const n = nodes.find((x) => x.name === name);
    if (!n) throw new Error(`${name} is not one of PGC_NODES`);
    return n;
  };
  const node = byName(requireEnv("PGC_ROLL_NODE"));
  const after = process.env.PGC_ROLL_AFTER ? byName(process.env.PGC_ROLL_AFTER) : undefined;
  const timeoutMs = Number(process.env.PGC_TIMEOUT_SECONDS ?? "120") * 1000;

  if (!after) {
    await ensureTls(nodes);
    await ensurePasswords(nodes);
  } else await settle(after, nodes, timeoutMs);
  const running = await runningContainer(node);
  const replaced = running !== null && differs(running, jsonEnv("PGC_ROLL_SPEC"));
  if (replaced) {
    const s = await sqlState(node);
    if (s?.inRecovery) {
      const graceMs = Number(process.env.PGC_DRAIN_SECONDS ?? "5") * 1000;
      const ended = await drainStandby(node, graceMs, true);
      act(
        `${node.name} left the read-only backend before its replacement${ended > 0 ? ` (${ended} sessions still open after ${graceMs} ms were ended)` : ""}`,
      );
    } else if (s && !(await hasCtl(node))) {
      act(
        `${node.name} runs a release without ctl.sh, which a switchover needs: its replacement restarts it (once; the new container has it)`,
      );
    } else if (s) {
      const c = await successor(node, nodes);
      if (c) {
        act(`${node.name} is the primary and its container will be replaced: switchover first`);
        await switchover(node, c, nodes, timeoutMs);
      } else if (nodes.length > 1) {
        throw new Error(
          `${node.name} is the primary and its container must be replaced, but no other node is a streaming standby to hand the role to; nothing was replaced. Check the standbys (docker logs), then pulumi up again.`,
        );
      } else {
        act(`${node.name} is the only node: its replacement restarts it`);
      }
    }
  }
  process.stdout.write(`${JSON.stringify({ node: node.name, replaced, actions })}\n`);
}

main().catch((err) => {
  log(`ERROR: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
});
