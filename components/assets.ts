import * as fs from "fs";
import * as path from "path";
import * as docker from "@pulumi/docker";

/** Where the assets live on the machine running Pulumi. */
export const ASSETS_DIR = path.resolve(__dirname, "..", "assets");

/** Where the node's assets are uploaded inside its container. */
export const CONTAINER_ASSETS_DIR = "/opt/pg-cluster";

/** Where each node's volume is mounted (the official image declares a VOLUME here). */
export const CONTAINER_VOLUME_DIR = "/var/lib/postgresql/data";

/** The port PostgreSQL listens on inside every container. */
export const CONTAINER_PORT = 5432;

/** Files each role runs or reads inside its container. */
const ROLE_FILES = {
  primary: [
    "lib.sh",
    "primary.sh",
    "healthcheck.sh",
    "postgresql.conf",
    "pg_hba.conf",
    "pg_ident.conf",
  ],
  replica: [
    "lib.sh",
    "replica.sh",
    "healthcheck.sh",
    "postgresql.conf",
    "pg_hba.conf",
    "pg_ident.conf",
  ],
} as const;

/** A node's role in the cluster. */
export type NodeRole = keyof typeof ROLE_FILES;

/**
 * The uploads that deliver a role's assets into its container. Uploads (not bind mounts) so the
 * component also works against a remote Docker host. Their content is part of the container's
 * inputs: editing an asset replaces the containers that carry it, never their volumes.
 */
export function containerUploads(role: NodeRole): docker.types.input.ContainerUpload[] {
  return ROLE_FILES[role].map((file) => ({
    file: `${CONTAINER_ASSETS_DIR}/${file}`,
    content: fs.readFileSync(path.join(ASSETS_DIR, file), "utf8"),
    executable: file.endsWith(".sh"),
  }));
}

/** The command that starts a role's entrypoint inside its container. */
export function entrypoint(role: NodeRole): string[] {
  return ["bash", `${CONTAINER_ASSETS_DIR}/${role}.sh`];
}
