// @ts-check
/**
 * The cluster's topology step (docs/design/primary-as-role.md): makes the node named in
 * PGC_DESIRED_PRIMARY the primary and every other node its streaming standby. It keeps no memory
 * between runs: it observes every node, then continues from wherever the cluster is, so a re-run
 * after a failure converges. A node becomes writable only by `pg_promote` after the old primary
 * was proven stopped cleanly and the candidate replayed its last WAL, or by undoing a demotion
 * while the candidate is still a standby: never two writable primaries.
 *
 * What SQL cannot do (stop a server, pg_rewind, bootstrap an empty volume) goes through the node's
 * own `ctl.sh`, by `docker exec` (or PGC_CTL in tests).
 *
 * Environment (set by the PostgresCluster component):
 *   PGC_NODES            [{"name","host","port","internalHost","internalPort"?,"slot","site"?,
 *                        "dockerHost"?}, ...] (host:port as the step and the nodes on other
 *                        Docker hosts reach the node; internalHost:internalPort as the nodes on
 *                        its own host do, on its network: its name and 5432; site: its Docker
 *                        host's name; dockerHost: that host's engine, for docker exec)
 *   PGC_DESIRED_PRIMARY  a node name
 *   PGC_SUPERUSER, PGC_SUPERUSER_PASSWORD, PGC_DATABASE, PGC_REPLICATION_USER
 *   PGC_SYNCHRONOUS_REPLICAS  k for `ANY k (...)` over the standbys (0: asynchronous)
 *   PGC_SWITCHOVER_MAX_LAG_BYTES  refuse a candidate further behind (default 16 MiB)
 *   PGC_SETTINGS         {"<setting>": "<size>", ...}: reloadable size settings every node must
 *                        have; set by ALTER SYSTEM and pg_reload_conf(), never by a restart
 *   PGC_TIMEOUT_SECONDS  bound on waiting for a node (default 120)
 *   PGC_CTL              optional {"<node>": {"argv": [...], "env": {...}}}: how to run a node's
 *                        ctl.sh (default: docker exec <node> bash /opt/pg-cluster/ctl.sh)
 *   PGC_TLS, PGC_TLS_CA  "on" and the CA certificate, with TLS: every connection verify-full
 *   PGC_TLS_FILES        {"<node>": "<CA cert, node cert, key (PEM)>"}: installed by ctl.sh tls
 *   PGC_BACKUP           "on" with backups: the primary's stanza is made (ctl.sh backup-stanza)
 *   PGC_RESTORE          optional {"stanza", "backup", "targetTime"?, "targetLsn"?}: a new
 *                        cluster's primary is restored from that stanza of the repository its
 *                        container mounts (ctl.sh bootstrap-restore) instead of initdb
 *   PGC_HEALTH_PASSWORD  password of the router's check role, pgc_health (made on the primary)
 *   PGC_ROUTER           optional: the router container; its runtime API is told of a switchover
 *                        the moment it happens (PGC_ROUTER_ARGV: a JSON argv that takes the
 *                        command as its last argument, instead of docker exec;
 *                        PGC_ROUTER_DOCKER_HOST: its engine, when not DOCKER_HOST's)
 * Prints one JSON line: {"primary", "timeline", "actions": [...], "nodes": [{"name","role"}]}.
 */
import { jsonEnv, log, requireEnv } from "./pgnode.mjs";
import {
  Refusal,
  act,
  actions,
  conninfo,
  ctl,
  ensureHealthRole,
  ensureSlot,
  follows,
  installTls,
  servesItsCertificate,
  upstreamAddress,
  leaveStandbys,
  lsnBytes,
  observe,
  promote,
  query,
  sqlState,
  switchover,
  tellRouter,
  waitUntil,
  writeTimeline,
} from "./roles.mjs";

/** @typedef {import("./roles.mjs").TopologyNode} TopologyNode */
/** @typedef {import("./roles.mjs").Observed} Observed */

/**
 * With `p` the primary: every other node streams from it through its own slot (an empty one is
 * cloned, a demoted one rewound and released, a standby re-pointed by a reload), stale slots are
 * dropped and synchronous_standby_names follows.
 */
async function converge(
  /** @type {TopologyNode} */ p,
  /** @type {Observed[]} */ seen,
  /** @type {number} */ timeoutMs,
) {
  const others = seen.filter((o) => o.node !== p);
  await ensureHealthRole(p);
  for (const o of others) await ensureSlot(p, o.node.slot);
  await Promise.all(
    others.map(async (o) => {
      const q = o.node;
      if (o.ctl?.volume === "empty") {
        act(`cloning ${q.name} from ${p.name}`);
        const at = upstreamAddress(p, q);
        await ctl(q, "bootstrap-clone", at.host, String(at.port));
      } else if (o.ctl?.hold) {
        act(`${q.name} rejoins as a standby of ${p.name} (pg_rewind when needed)`);
        const at = upstreamAddress(p, q);
        await ctl(q, "follow", at.host, String(at.port));
        try {
          const rewound = await ctl(q, "rewind", conninfo(p, q, "postgres"));
          act(`${q.name}: rewind ${rewound.rewind ?? "done"}`);
        } catch (err) {
          // pg_rewind cannot always work (the node's WAL since the fork may be gone): a fresh
          // copy of the primary, swapped in only when complete, always does.
          const why = (err instanceof Error ? err.message : String(err)).split("\n")[0];
          act(`${q.name}: pg_rewind failed (${why}); cloning it again from ${p.name}`);
          await ctl(q, "reclone", at.host, String(at.port));
        }
        await ctl(q, "release");
      } else if (o.sql && !follows(o.sql, p, q)) {
        await query(q, `ALTER SYSTEM SET primary_conninfo = '${conninfo(p, q)}'`);
        await query(q, `ALTER SYSTEM SET primary_slot_name = '${q.slot}'`);
        await query(q, "SELECT pg_reload_conf()");
        act(`${q.name} now follows ${p.name} (reload, no restart)`);
      }
    }),
  );
  await Promise.all(
    others.map((o) =>
      waitUntil(`${o.node.name} to stream from ${p.name}`, timeoutMs, async () => {
        const s = await sqlState(o.node);
        return !!s?.inRecovery && s.receiver?.status === "streaming";
      }),
    ),
  );
  // Slots: on the primary, keep the current nodes' ones; on a standby, none is in use.
  const keep = new Set(others.map((o) => o.node.slot));
  for (const o of [{ node: p }, ...others]) {
    const rows = await query(
      o.node,
      "SELECT slot_name FROM pg_replication_slots WHERE slot_type = 'physical' AND NOT active",
    );
    for (const { slot_name } of rows) {
      if (o.node === p && keep.has(slot_name)) continue;
      await query(o.node, "SELECT pg_drop_replication_slot($1)", [slot_name]);
      act(`dropped stale slot ${slot_name} on ${o.node.name}`);
    }
  }
  await applySettings([p, ...others.map((o) => o.node)]);
  // The router's read-only backend: every streaming standby in, the primary out (also after a
  // run that stopped half-way).
  await tellRouter(
    `set server standbys/${p.name} state maint`,
    ...others.map((o) => `set server standbys/${o.node.name} state ready`),
  );
  const k = Number(process.env.PGC_SYNCHRONOUS_REPLICAS ?? "0");
  const names = k === 0 ? "" : `ANY ${k} (${others.map((o) => `"${o.node.name}"`).join(", ")})`;
  const [cur] = await query(p, "SELECT current_setting('synchronous_standby_names') AS v");
  if (cur.v !== names) {
    await query(p, `ALTER SYSTEM SET synchronous_standby_names = '${names}'`);
    await query(p, "SELECT pg_reload_conf()");
    // A reload is asynchronous: wait until new sessions and the WAL senders use it, so the
    // post-step's report (and the first commit after the up) see it.
    await waitUntil(`synchronous_standby_names = '${names}' on ${p.name}`, 10_000, async () => {
      const [r] = await query(
        p,
        `SELECT current_setting('synchronous_standby_names') AS v,
                (SELECT count(*) FROM pg_stat_replication WHERE sync_state IN ('sync', 'quorum'))::int AS sync`,
      );
      return r.v === names && (k === 0 ? r.sync === 0 : r.sync >= Math.min(k, others.length));
    });
    act(`synchronous_standby_names = '${names}' on ${p.name}`);
  }
}

/**
 * Every node gets the reloadable settings asked for (PGC_SETTINGS): `ALTER SYSTEM` where a value
 * differs (compared as sizes, so "1024MB" is "1GB"), then `pg_reload_conf()`, and a wait until
 * new sessions see it. No restart: these are `sighup` settings.
 * @param {TopologyNode[]} nodes
 */
async function applySettings(nodes) {
  /** @type {Record<string, string>} */
  const wanted = process.env.PGC_SETTINGS ? jsonEnv("PGC_SETTINGS") : {};
  const entries = Object.entries(wanted);
  if (entries.length === 0) return;
  const differing = async (/** @type {TopologyNode} */ node) => {
    const names = [];
    for (const [name, value] of entries) {
      const [r] = await query(
        node,
        "SELECT pg_size_bytes(current_setting($1)) = pg_size_bytes($2) AS same",
        [name, value],
      );
      if (!r.same) names.push(name);
    }
    return names;
  };
  await Promise.all(
    nodes.map(async (node) => {
      const names = await differing(node);
      if (names.length === 0) return;
      // Names come from the component's fixed list, values are validated sizes.
      for (const name of names) await query(node, `ALTER SYSTEM SET ${name} = '${wanted[name]}'`);
      await query(node, "SELECT pg_reload_conf()");
      await waitUntil(`${names.join(", ")} reloaded on ${node.name}`, 10_000, async () => {
        return (await differing(node)).length === 0;
      });
      act(
        `${node.name}: ${names.map((n) => `${n} = ${wanted[n]}`).join(", ")} (reload, no restart)`,
      );
    }),
  );
}

/**
 * No node is writable: an earlier run stopped the old primary and did not finish, or the primary's
 * volume is gone. Makes the desired node the primary only when that cannot lose a commit: every
 * populated node answers (or is held by us), and no standby has replayed more than it. Returns the
 * node that is writable after it: the desired one, or an old primary started again because its
 * demotion was cut short by a crash (the caller then moves the primary by a switchover).
 * @param {Observed[]} seen @param {Observed} desiredSeen
 * @returns {Promise<TopologyNode>}
 */
async function withoutWritableNode(seen, desiredSeen) {
  const desired = desiredSeen.node;
  const silent = seen.filter(
    (o) => o !== desiredSeen && !o.sql && !o.ctl?.hold && o.ctl?.volume === "populated",
  );
  if (silent.length > 0) {
    throw new Error(
      `no node is writable, and ${silent.map((o) => o.node.name).join(", ")} hold the cluster but do not answer, so ${desired.name} cannot be made the primary safely; nothing was changed. Start them (docker start), then pulumi up.`,
    );
  }
  if (desiredSeen.ctl?.hold) {
    // An earlier run stopped this node to move the primary away and did not finish, and it is
    // wanted as the primary again. No node is writable and every populated node answers, so none
    // was promoted in its place: starting it as the primary again is safe.
    await ctl(desired, "undemote");
    act(`${desired.name} was stopped by an unfinished switchover; it is the primary again`);
    return desired;
  }
  const held = seen.find((o) => o !== desiredSeen && o.ctl?.hold);
  if (held?.ctl) {
    // An earlier run stopped this old primary for a switchover and did not finish. If it stopped
    // cleanly and the candidate has replayed its shutdown checkpoint (its last WAL), the
    // candidate holds every commit: promote it. Otherwise (a crash during the stop, or WAL the
    // candidate never received) only the old primary has it: no node is writable and none was
    // promoted, so start it as the primary again, and the switchover starts over.
    const end = held.ctl.state === "shut down" ? held.ctl.checkpointLsn : null;
    const replayed = desiredSeen.sql?.replayLsn;
    if (end && desiredSeen.sql?.inRecovery && replayed && lsnBytes(replayed) > lsnBytes(end)) {
      await leaveStandbys(desired);
      await promote(desired, `it had replayed ${held.node.name}'s shutdown checkpoint ${end}`);
      return desired;
    }
    await ctl(held.node, "undemote");
    act(
      `${held.node.name} was stopped by an unfinished switchover (state: ${held.ctl.state}) and ${desired.name} lacks its last WAL; it is the primary again, and the switchover starts over`,
    );
    return held.node;
  }
  if (!desiredSeen.sql?.inRecovery || !desiredSeen.sql.replayLsn) {
    throw new Error(
      `no node is writable and ${desired.name} is not a standby that answers; nothing was changed.`,
    );
  }
  const mine = lsnBytes(desiredSeen.sql.replayLsn);
  const ahead = seen.find(
    (o) => o.sql?.inRecovery && o.sql.replayLsn && lsnBytes(o.sql.replayLsn) > mine,
  );
  if (ahead) {
    throw new Refusal(
      `${ahead.node.name} has replayed more WAL (${ahead.sql?.replayLsn}) than ${desired.name} (${desiredSeen.sql.replayLsn}); nothing was changed. Set primary to ${ahead.node.name}, then pulumi up.`,
    );
  }
  await leaveStandbys(desired);
  await promote(desired, "no other node holds newer WAL");
  return desired;
}

/** @param {Observed[]} seen @param {TopologyNode} desired */
function lostPrimary(seen, desired) {
  const holders = seen.filter((o) => o.sql || o.ctl?.volume === "populated");
  const best = holders
    .filter((o) => o.sql?.replayLsn)
    .sort((a, b) =>
      Number(lsnBytes(b.sql?.replayLsn ?? "0/0") - lsnBytes(a.sql?.replayLsn ?? "0/0")),
    )[0];
  return new Refusal(
    `the primary ${desired.name} has an empty data volume, but ${holders.map((o) => o.node.name).join(" and ")} hold this cluster` +
      (best ? ` (most advanced: ${best.node.name}, replayed ${best.sql?.replayLsn})` : "") +
      `. Nothing was changed and no database was created. To recover, make the most advanced replica the primary: pulumi config set primary ${best?.node.name ?? "<a replica>"}, then pulumi up; ${desired.name} will be re-cloned from it as a standby.`,
  );
}

async function main() {
  /** @type {TopologyNode[]} */
  const nodes = jsonEnv("PGC_NODES");
  const desired = nodes.find((n) => n.name === requireEnv("PGC_DESIRED_PRIMARY"));
  if (!desired) throw new Error(`PGC_DESIRED_PRIMARY is not one of PGC_NODES`);
  const timeoutMs = Number(process.env.PGC_TIMEOUT_SECONDS ?? "120") * 1000;
  const deadline = Date.now() + timeoutMs;

  if (process.env.PGC_TLS === "on") {
    // Before anything connects or clones: a new node waits for its certificate to start, and a
    // new certificate (rotation, new names) is a reload. A node that serves its bundle's
    // certificate already is left alone (most ups: a docker exec per node saved). A node whose
    // container does not answer now is observed below like any other.
    await Promise.all(
      nodes.map(async (n) => {
        if (await servesItsCertificate(n)) return;
        await installTls(n).catch((err) => log(`${n.name}: TLS not installed now: ${err.message}`));
      }),
    );
  }
  let seen = await Promise.all(nodes.map((n) => observe(n, deadline)));
  const populated = seen.filter((o) => o.sql || o.ctl?.volume === "populated");
  if (populated.length === 0) {
    const restore = process.env.PGC_RESTORE ? jsonEnv("PGC_RESTORE") : undefined;
    if (restore) {
      const to = restore.targetTime ?? restore.targetLsn ?? "the end of its archive";
      act(`new cluster: restored on ${desired.name} from stanza ${restore.stanza}, to ${to}`);
      await ctl(
        desired,
        "bootstrap-restore",
        restore.stanza,
        // pgBackRest picks the backup for a time itself; for an LSN, the one the guard chose.
        ...(restore.targetTime ? [restore.targetTime] : []),
        ...(restore.targetLsn ? [restore.targetLsn, restore.backup] : []),
      );
    } else {
      act(`new cluster: initdb on ${desired.name}`);
      await ctl(desired, "bootstrap-initdb");
    }
    seen = await Promise.all(nodes.map((n) => observe(n, deadline)));
  }
  const ids = new Set(
    seen.map((o) => o.sql?.systemIdentifier ?? o.ctl?.systemIdentifier).filter(Boolean),
  );
  if (ids.size > 1) {
    throw new Refusal(
      `the nodes hold different clusters (system identifiers: ${seen.map((o) => `${o.node.name}=${o.sql?.systemIdentifier ?? o.ctl?.systemIdentifier ?? "empty"}`).join(", ")}); nothing was changed. Remove the volume of the node that does not belong, or restore it.`,
    );
  }
  const desiredSeen = /** @type {Observed} */ (seen.find((o) => o.node === desired));
  if (desiredSeen.ctl?.volume === "empty") throw lostPrimary(seen, desired);

  const writable = seen.filter((o) => o.sql && !o.sql.inRecovery);
  if (writable.length > 1) {
    throw new Error(
      `two writable primaries: ${writable.map((o) => o.node.name).join(", ")}; nothing was changed. Stop the one that should not be written to (docker stop), then run pulumi up.`,
    );
  }
  const primary =
    writable.length === 0 ? await withoutWritableNode(seen, desiredSeen) : writable[0].node;
  if (primary !== desired) {
    if (writable.length === 0) {
      // Started again just now: its standbys reconnect within a second or two.
      await waitUntil(`${desired.name} to stream from ${primary.name} again`, 30_000, async () => {
        const s = await sqlState(desired);
        return s?.receiver?.status === "streaming";
      }).catch(() => {}); // if not, the switchover's preconditions say why
    }
    if (desiredSeen.ctl?.hold || (desiredSeen.sql && !follows(desiredSeen.sql, primary, desired))) {
      // Not a standby of the primary yet (a roll replaced it after switching away from it, say):
      // it becomes one first, and the switchover back then goes as any other.
      await converge(primary, await Promise.all(nodes.map((n) => observe(n, deadline))), timeoutMs);
    }
    await switchover(primary, desired, nodes, timeoutMs);
  }
  seen = await Promise.all(nodes.map((n) => observe(n, deadline)));
  await converge(desired, seen, timeoutMs);
  if (process.env.PGC_BACKUP === "on") {
    // The stanza on the repository (idempotent), and a check that the primary's WAL reaches it.
    await ctl(desired, "backup-stanza");
  }
  const timeline = await writeTimeline(desired);
  process.stdout.write(
    `${JSON.stringify({
      primary: desired.name,
      timeline,
      actions,
      nodes: nodes.map((n) => ({ name: n.name, role: n === desired ? "primary" : "standby" })),
    })}\n`,
  );
}

main().catch((err) => {
  log(`ERROR: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
});
