import * as fs from "fs";
import * as path from "path";
import * as docker from "@pulumi/docker";
import * as pulumi from "@pulumi/pulumi";

/**
 * Where the assets live on the machine running Pulumi: the package's `assets/`, found from this
 * file both as source (`components/`) and as the package's build (`bin/components/`).
 */
export const ASSETS_DIR = findAssets(__dirname);

function findAssets(from: string): string {
  for (let dir = from; ; dir = path.dirname(dir)) {
    const candidate = path.join(dir, "assets");
    if (fs.existsSync(path.join(candidate, "node.sh"))) return candidate;
    if (path.dirname(dir) === dir) {
      throw new Error(`pg-cluster: no assets/node.sh above ${from}; the package is incomplete`);
    }
  }
}

/** Where the node's assets are uploaded inside its container. */
export const CONTAINER_ASSETS_DIR = "/opt/pg-cluster";

/** Where each node's volume is mounted (the official image declares a VOLUME here). */
export const CONTAINER_VOLUME_DIR = "/var/lib/postgresql/data";

/**
 * Where a node's passwords are uploaded (the superuser's, then the replication role's, one per
 * line; 0600): a file, not the environment, so `docker inspect` and `docker exec` do not show
 * them. The entrypoint, as root, gives it to the postgres user (lib.sh `pgc_read_secrets`).
 */
export const CONTAINER_SECRETS_FILE = "/run/secrets/pg-cluster";

/** The port PostgreSQL listens on inside every container. */
export const CONTAINER_PORT = 5432;

/**
 * Files every node runs or reads inside its container. One set for every node, whatever its
 * role: the role lives in the data directory, so a switchover changes no container's inputs.
 */
const NODE_FILES = [
  "lib.sh",
  "entrypoint.sh",
  "ctl.sh",
  "repository.sh",
  "healthcheck.sh",
  "postgresql.conf",
  "pg_hba.conf",
  "pg_ident.conf",
] as const;

/** The one file uploaded into every container: it unpacks the role's assets, then runs them. */
export const CONTAINER_BUNDLE = `${CONTAINER_ASSETS_DIR}/node.sh`;

/**
 * The upload that delivers a role's assets into its container. Uploads (not bind mounts) so the
 * component also works against a remote Docker host. Their content is part of the container's
 * inputs: editing an asset replaces the containers that carry it, never their volumes.
 *
 * One upload for the assets, not one per file: Docker copies each upload into the stopped
 * container with its own API call (~40 ms each, several times that while other containers
 * start), and six of them were the largest part of creating a node. The passwords are a second,
 * secret upload.
 */
export function containerUploads(
  secrets: pulumi.Input<string>,
): docker.types.input.ContainerUpload[] {
  return [
    { file: CONTAINER_BUNDLE, content: nodeBundle(), executable: true },
    { file: CONTAINER_SECRETS_FILE, content: pulumi.secret(secrets), permissions: "0600" },
  ];
}

/** The content of a node's {@link CONTAINER_SECRETS_FILE}. */
export function secretsFile(superuserPassword: string, replicationPassword: string): string {
  return `${superuserPassword}\n${replicationPassword}\n`;
}

/**
 * `assets/node.sh` with the node's asset files filled in as quoted here-documents (verbatim): the
 * script writes the files and execs the entrypoint.
 */
export function nodeBundle(): string {
  const files = NODE_FILES.map((file) => {
    const content = fs.readFileSync(path.join(ASSETS_DIR, file), "utf8");
    const end = `PGC_END_OF_${file.replace(/\W/g, "_").toUpperCase()}`;
    // A here-document ends at its marker line and adds the final newline back.
    if (!content.endsWith("\n") || content.split("\n").includes(end)) {
      throw new Error(`assets/${file} must end with a newline and not contain a line "${end}"`);
    }
    return `cat >"$dir/${file}" <<'${end}'\n${content}${end}`;
  });
  const template = fs.readFileSync(path.join(ASSETS_DIR, "node.sh"), "utf8");
  if (!template.includes("\n# @FILES@\n")) {
    throw new Error("assets/node.sh must keep its '# @FILES@' line");
  }
  // A function as the replacement: asset text may contain `$&`-style patterns.
  return template.replace("\n# @FILES@\n", () => `\n${files.join("\n")}\n`);
}

/** The command that starts the entrypoint inside a node's container. */
export function entrypoint(): string[] {
  return ["bash", CONTAINER_BUNDLE];
}
