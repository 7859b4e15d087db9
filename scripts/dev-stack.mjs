// What scripts/up.sh needs to know about the dev stack, in one short Node.js process: is the
// deployed stack current (nothing to do), changed (run `pulumi up`), or has Docker drifted from
// the state (run `pulumi up --refresh`)? And, after a successful up, the stamp that answers the
// first question next time, and the outputs for the report. JavaScript rather than shell because
// it reads JSON (the state, `docker inspect`); plain .mjs so it starts in ~50 ms (no tsx).
//
//   node scripts/dev-stack.mjs check   -> prints "<verdict> <sources-hash>"; the reason on stderr
//   node scripts/dev-stack.mjs sources -> the sources hash alone (after up.sh changed the config)
//   node scripts/dev-stack.mjs record SOURCES-HASH -> after a successful up: writes the stamp,
//                                                     then prints what `outputs` prints
//   node scripts/dev-stack.mjs outputs -> the read-write and read-only endpoints, then the
//                                         replication report (JSON)
//   pulumi config --json | node scripts/dev-stack.mjs config -> "key value" lines, secrets masked
//
// Environment (set by scripts/dev-stack.sh): PG_CLUSTER_REPO, PG_CLUSTER_STACK,
// PG_CLUSTER_CONFIG_FILE, PG_CLUSTER_UP_STAMP, PULUMI_BACKEND_URL, PG_CLUSTER_TOOLCHAIN.
//
// The rule (README, "The two commands"): the stack is current only when a stamp written after the
// last successful `npm run up` exists and all of these are equal to what it recorded: the hash of
// the sources (every file of the checkout but .git, node_modules, .state and other stacks' config
// files; npm's record of the installed packages, the stack's config file, the toolchain's stamp,
// the Node.js version, the stack name, and the PULUMI_*/DOCKER_* environment but passphrase and
// token), the hash of the stack's state (its resources and pending operations), and the
// fingerprint of every Docker object the state records (id, name, status, configuration,
// networks, and the id its image tag points at). Independently of any stamp, a container the
// state records that is missing, has another id or is not running is drift.
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { gunzipSync } from "node:zlib";

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set: run this through scripts/up.sh`);
  return v;
};
const REPO = env("PG_CLUSTER_REPO");
const STACK = env("PG_CLUSTER_STACK");
const CONFIG_FILE = env("PG_CLUSTER_CONFIG_FILE");
const STAMP = env("PG_CLUSTER_UP_STAMP");

/** The project's name, from Pulumi.yaml: the namespace of its config keys and its state's folder. */
const PROJECT = /^name:\s*["']?([^"'\s#]+)/m.exec(
  fs.readFileSync(path.join(REPO, "Pulumi.yaml"), "utf8"),
)?.[1];

const sha = (data) => createHash("sha256").update(data).digest("hex");

/** The latest deployment in a file:// backend's checkpoint file; undefined if there is none. */
function checkpointFile() {
  const url = process.env.PULUMI_BACKEND_URL ?? "";
  if (!url.startsWith("file://")) return undefined;
  const stacks = path.join(fileURLToPath(url), ".pulumi", "stacks");
  // The project-scoped layout (Pulumi 3.61+) first, then the legacy one.
  for (const base of [path.join(stacks, PROJECT ?? ""), stacks]) {
    for (const [suffix, read] of [
      [".json", (b) => b],
      [".json.gz", gunzipSync],
    ]) {
      const file = path.join(base, `${STACK}${suffix}`);
      if (fs.existsSync(file)) {
        const checkpoint = JSON.parse(read(fs.readFileSync(file)).toString("utf8")).checkpoint;
        return checkpoint?.latest ?? {};
      }
    }
  }
  return undefined;
}

/**
 * The stack's latest deployment, or null when the stack does not exist. A file:// backend's
 * checkpoint is read directly (the CLI would take ~0.3 s to start); any other backend through
 * `pulumi stack export`.
 * @returns {{ resources?: any[], pending_operations?: any[] } | null}
 */
function deployment() {
  try {
    const fromFile = checkpointFile();
    if (fromFile) return fromFile;
  } catch {
    // A file:// URL node cannot map to a path, an unreadable file: ask the CLI instead.
  }
  const r = spawnSync("pulumi", ["stack", "export", "--stack", STACK], {
    cwd: REPO,
    encoding: "utf8",
    maxBuffer: 256 * 1024 * 1024,
  });
  if (r.status !== 0) return null;
  return JSON.parse(r.stdout).deployment ?? {};
}

/**
 * Every regular file and symlink under dir, relative to it, sorted; skips .git, node_modules,
 * .state, and other stacks' config files (a top-level Pulumi.<stack>.yaml: `pulumi up` reads only
 * Pulumi.yaml and the config file it is given, and the tests create and remove such files).
 */
function files(dir, rel = "") {
  const out = [];
  const entries = fs
    .readdirSync(path.join(dir, rel), { withFileTypes: true })
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  for (const e of entries) {
    const p = rel ? `${rel}/${e.name}` : e.name;
    if (e.isDirectory()) {
      if (e.name === ".git" || e.name === "node_modules" || (rel === "" && e.name === ".state")) {
        continue;
      }
      out.push(...files(dir, p));
    } else if (rel === "" && /^Pulumi\..+\.ya?ml$/.test(e.name)) {
      continue;
    } else if (e.isFile() || e.isSymbolicLink()) {
      out.push(p);
    }
  }
  return out;
}

/**
 * Everything that decides what `pulumi up` would deploy (see the rule above): a digest per part
 * (a file by its path, the Node.js version, an environment variable by its name), and the hash
 * of them all.
 * @returns {{ hash: string, parts: Record<string, string> }}
 */
function sources() {
  /** @type {Record<string, string>} */
  const parts = {};
  for (const f of files(REPO)) {
    const p = path.join(REPO, f);
    const st = fs.lstatSync(p);
    const data = st.isSymbolicLink() ? fs.readlinkSync(p) : fs.readFileSync(p);
    parts[f] = createHash("sha256").update(`${st.mode}\0`).update(data).digest("hex");
  }
  const extra = [
    path.join(REPO, "node_modules", ".package-lock.json"),
    CONFIG_FILE,
    path.join(process.env.PG_CLUSTER_TOOLCHAIN ?? "", "stamp"),
    path.join(process.env.PG_CLUSTER_TOOLCHAIN ?? "", "status"),
  ];
  for (const f of extra) parts[f] = fs.existsSync(f) ? sha(fs.readFileSync(f)) : "(missing)";
  parts["(node)"] = process.version;
  parts["(stack)"] = STACK;
  const vars = Object.keys(process.env)
    .filter((k) => /^(PULUMI_|DOCKER_)/.test(k) && !/PASSPHRASE|TOKEN/.test(k))
    .sort();
  for (const k of vars) parts[`$${k}`] = sha(process.env[k] ?? "");
  const hash = sha(JSON.stringify(parts));
  // Kept until `record` puts them in the stamp, so the next check can name what changed.
  fs.writeFileSync(`${STAMP}.sources`, JSON.stringify({ hash, parts }) + "\n");
  return { hash, parts };
}

/** The parts that differ between two sets, named (at most three, and how many more). */
function changedParts(before, now) {
  const names = [...new Set([...Object.keys(before ?? {}), ...Object.keys(now)])].filter(
    (k) => before?.[k] !== now[k],
  );
  const more = names.length > 3 ? ` and ${names.length - 3} more` : "";
  return names.slice(0, 3).join(", ") + more;
}

const CONTAINER = "docker:index/container:Container";
const VOLUME = "docker:index/volume:Volume";
const NETWORK = "docker:index/network:Network";

/**
 * Docker's view of the objects the state records: a fingerprint of their identity and
 * configuration, and the problems a refresh would act on (missing, replaced, not running).
 * @param {any[]} resources
 */
function dockerView(resources) {
  const objects = resources.filter((r) => [CONTAINER, VOLUME, NETWORK].includes(r.type) && r.id);
  const images = [
    ...new Set(objects.filter((r) => r.type === CONTAINER).map((r) => r.inputs?.image)),
  ].filter((i) => typeof i === "string");
  const refs = [...objects.map((r) => r.id), ...images];
  if (refs.length === 0) return { fingerprint: sha("[]"), problems: [] };
  // One docker CLI run for all of them (it honours DOCKER_HOST and contexts, as the provider
  // does); it exits non-zero when any is missing but still prints the others.
  const r = spawnSync("docker", ["inspect", "--format", "{{json .}}", ...refs], {
    encoding: "utf8",
    maxBuffer: 64 * 1024 * 1024,
  });
  if (r.error) throw r.error;
  const found = r.stdout
    .split("\n")
    .filter(Boolean)
    .map((l) => JSON.parse(l));
  const problems = [];
  const prints = [];
  for (const res of objects) {
    const name = res.urn.split("::").pop();
    let o;
    if (res.type === CONTAINER) {
      o = found.find((x) => x.Id === res.id && x.State);
      if (!o) problems.push(`container ${name} (${res.id.slice(0, 12)}) is missing`);
      else if (!o.State.Running || o.State.Restarting) {
        problems.push(`container ${name} is ${o.State.Status}`);
      }
      prints.push(
        o && {
          Id: o.Id,
          Name: o.Name,
          Image: o.Image,
          Status: o.State.Status,
          Config: o.Config,
          HostConfig: o.HostConfig,
          Networks: o.NetworkSettings?.Networks,
        },
      );
    } else if (res.type === VOLUME) {
      o = found.find((x) => x.Name === res.id && x.Mountpoint !== undefined);
      if (!o) problems.push(`volume ${res.id} is missing`);
      prints.push(o && { Name: o.Name, Driver: o.Driver, Labels: o.Labels, Options: o.Options });
    } else {
      o = found.find((x) => x.Id === res.id && x.IPAM);
      if (!o) problems.push(`network ${name} (${res.id.slice(0, 12)}) is missing`);
      prints.push(
        o && {
          Id: o.Id,
          Name: o.Name,
          Driver: o.Driver,
          IPAM: o.IPAM,
          Internal: o.Internal,
          Options: o.Options,
          Labels: o.Labels,
        },
      );
    }
  }
  for (const image of images) {
    prints.push({ image, id: found.find((x) => x.RepoTags?.includes(image))?.Id ?? null });
  }
  return { fingerprint: sha(JSON.stringify(prints)), problems };
}

/** Hash of the state's resources and pending operations: any change to the state shows. */
const stateHash = (d) =>
  sha(JSON.stringify({ resources: d.resources ?? [], pending: d.pending_operations ?? [] }));

function readStamp() {
  try {
    return JSON.parse(fs.readFileSync(STAMP, "utf8"));
  } catch {
    return null;
  }
}

const say = (m) => process.stderr.write(`[pg-cluster] ${m}\n`);

function check() {
  const d = deployment();
  const { hash, parts } = sources();
  if (d === null) {
    say(`stack ${STACK} does not exist yet`);
    return `new ${hash}`;
  }
  const { fingerprint, problems } = dockerView(d.resources ?? []);
  const stamp = readStamp();
  if (problems.length > 0) {
    say(`Docker differs from the state of stack ${STACK}: ${problems.join("; ")}`);
    return `drift ${hash}`;
  }
  if (stamp && stamp.state === stateHash(d) && stamp.docker !== fingerprint) {
    say(`Docker's objects of stack ${STACK} were changed since the last up`);
    return `drift ${hash}`;
  }
  const why = !stamp
    ? "no record of a successful up"
    : stamp.sources !== hash
      ? `changed since the last up: ${changedParts(stamp.parts, parts)}`
      : stamp.state !== stateHash(d)
        ? "the state changed since the last up"
        : (d.pending_operations ?? []).length > 0
          ? "the state has pending operations"
          : "";
  if (why) {
    say(`stack ${STACK}: ${why}`);
    return `changed ${hash}`;
  }
  return `current ${hash}`;
}

/** After a successful up: writes the stamp, then prints the outputs (one process for both). */
function record(hash) {
  if (!/^[0-9a-f]{64}$/.test(hash ?? "")) throw new Error("record needs the sources hash");
  const d = deployment();
  if (d === null) throw new Error(`stack ${STACK} has no state after the up`);
  const { fingerprint, problems } = dockerView(d.resources ?? []);
  // A stamp is only a promise that nothing needs doing: never write one over a problem.
  if (problems.length > 0) {
    say(`not recording the up as current: ${problems.join("; ")}`);
  } else {
    let parts;
    try {
      const pending = JSON.parse(fs.readFileSync(`${STAMP}.sources`, "utf8"));
      if (pending.hash === hash) parts = pending.parts;
    } catch {
      /* without the parts the next check cannot name what changed, only that something did */
    }
    const stamp = { sources: hash, state: stateHash(d), docker: fingerprint, parts };
    fs.writeFileSync(`${STAMP}.tmp`, JSON.stringify(stamp) + "\n");
    fs.renameSync(`${STAMP}.tmp`, STAMP);
  }
  outputs(d);
}

/**
 * The router's read-write and read-only endpoints, pgAdmin's URL and, with TLS, the file the CA
 * certificate was written to (beside the stamp; "-" without either) on one line, then the
 * replication report as JSON, from the state's stack outputs.
 */
function outputs(d = deployment()) {
  const stack = (d?.resources ?? []).find((r) => r.type === "pulumi:pulumi:Stack");
  const o = stack?.outputs ?? {};
  // A secret output is stored encrypted; show what `pulumi stack output` would show.
  const shown = (v) => (v && typeof v === "object" && "ciphertext" in v ? "[secret]" : v);
  let caFile = "-";
  if (typeof o.caCertificate === "string") {
    // Per stack: two stacks of this checkout (PG_CLUSTER_STACK) have two CAs.
    caFile = path.join(path.dirname(STAMP), `ca.${STACK}.crt`);
    fs.writeFileSync(caFile, o.caCertificate);
  }
  process.stdout.write(
    `${shown(o.readWriteEndpoint) ?? ""} ${shown(o.readOnlyEndpoint) ?? ""} ${shown(o.pgadminUrl) ?? "-"} ${caFile}\n`,
  );
  process.stdout.write(`${JSON.stringify(shown(o.replicationReport) ?? null, null, 2)}\n`);
}

/** `pulumi config --json` on stdin: one "key value" line per key of the project; secrets masked. */
function config() {
  const raw = JSON.parse(fs.readFileSync(0, "utf8"));
  for (const [key, entry] of Object.entries(raw)) {
    if (!key.startsWith(`${PROJECT}:`)) continue;
    const value = entry.secret ? "[secret]" : String(entry.value ?? "");
    process.stdout.write(`${key.slice(PROJECT.length + 1)} ${value}\n`);
  }
}

const [cmd, arg] = process.argv.slice(2);
if (cmd === "check") process.stdout.write(`${check()}\n`);
else if (cmd === "sources") process.stdout.write(`${sources().hash}\n`);
else if (cmd === "record") record(arg);
else if (cmd === "outputs") outputs();
else if (cmd === "config") config();
else
  throw new Error(
    "usage: node scripts/dev-stack.mjs check | sources | record SOURCES-HASH | outputs | config",
  );
