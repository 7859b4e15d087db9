import * as docker from "@pulumi/docker";
import * as pulumi from "@pulumi/pulumi";
import { CONTAINER_PORT } from "./assets";
import { clusterContainerArgs, inheritedDependsOn } from "./options";
import { ROUTER_PORTS } from "./router";

/** Where the image's contract (that of the official `dpage/pgadmin4`) reads its inputs. */
export const PGADMIN_PATHS = {
  /** The servers to register (`setup.py load-servers` format). */
  servers: "/pgadmin4/servers.json",
  /** The login password, read once when pgAdmin's database is created. */
  password: "/run/pgadmin/password",
  /** With TLS: the cluster's CA, which the registered servers verify the nodes against (PGSSLROOTCERT). */
  ca: "/pgadmin4/pg-cluster-ca.crt",
} as const;
/**
 * The port pgAdmin listens on inside its container (gunicorn, plain HTTP): unprivileged, as it
 * runs as uid 5050 in both images.
 */
export const PGADMIN_CONTAINER_PORT = 5050;

/** One server in pgAdmin's tree. */
export interface PgAdminServer {
  /** Shown in the tree: the role, then the node (`primary: <node>`). */
  readonly name: string;
  /** Host and port on the cluster network. */
  readonly host: string;
  readonly port: number;
}

/** Arguments of a {@link PgAdmin}. */
export interface PgAdminContainerArgs {
  /** Physical name of the container (and its host name on the cluster network). */
  readonly containerName: string;
  /** Label value grouping the cluster's Docker objects, and the group in pgAdmin's tree. */
  readonly clusterName: string;
  readonly image: string;
  readonly networkName: pulumi.Input<string>;
  /** The servers to register, in the order shown. */
  readonly servers: readonly PgAdminServer[];
  /** Database and role the registered servers connect with (the password is typed, not stored). */
  readonly database: string;
  readonly username: string;
  readonly email: string;
  /** Secret. */
  readonly password: pulumi.Input<string>;
  readonly bindAddress: string;
  readonly hostPort: number;
  /** With TLS: the cluster's CA certificate; every server is registered with verify-full. */
  readonly caCertificate?: pulumi.Input<string>;
}

/**
 * pgAdmin 4 on the cluster network (issue 14): its own login (email and a secret password, no
 * default), every node and both router endpoints registered in one group, named by role, with no
 * PostgreSQL password stored (pgAdmin asks for it on connect, and keeps it only encrypted if the
 * user saves it); with TLS, each verifies the node against the cluster's CA (verify-full). The
 * registered servers are part of the container's inputs: when the roles or
 * the nodes change, the container is replaced and registers them again (pgAdmin's own database,
 * with its preferences and saved passwords, starts afresh then).
 */
export class PgAdmin extends pulumi.ComponentResource {
  public readonly container: docker.Container;

  constructor(name: string, args: PgAdminContainerArgs, opts?: pulumi.ComponentResourceOptions) {
    super("pg-cluster:index:PgAdmin", name, {}, opts);
    this.container = new docker.Container(
      name,
      {
        ...clusterContainerArgs({
          containerName: args.containerName,
          clusterName: args.clusterName,
          networkName: args.networkName,
          bindAddress: args.bindAddress,
          ports: [[PGADMIN_CONTAINER_PORT, args.hostPort]],
        }),
        image: args.image,
        envs: [
          `PGADMIN_DEFAULT_EMAIL=${args.email}`,
          `PGADMIN_DEFAULT_PASSWORD_FILE=${PGADMIN_PATHS.password}`,
          `PGADMIN_SERVER_JSON_FILE=${PGADMIN_PATHS.servers}`,
          `PGADMIN_LISTEN_PORT=${PGADMIN_CONTAINER_PORT}`,
          // Python literals in pgAdmin's config: no call home, no master password prompt (saved
          // passwords are then encrypted with the login password).
          "PGADMIN_CONFIG_UPGRADE_CHECK_ENABLED=False",
          "PGADMIN_CONFIG_MASTER_PASSWORD_REQUIRED=False",
          "PGADMIN_CONFIG_SHOW_GRAVATAR_IMAGE=False",
          "PGADMIN_DISABLE_POSTFIX=true",
          // libpq's default CA file for every server: pgAdmin in server mode drops a
          // sslrootcert outside the user's storage directory from servers.json.
          ...(args.caCertificate ? [`PGSSLROOTCERT=${PGADMIN_PATHS.ca}`] : []),
        ],
        uploads: [
          { file: PGADMIN_PATHS.servers, content: serversJson(args), permissions: "0444" },
          ...(args.caCertificate
            ? [{ file: PGADMIN_PATHS.ca, content: args.caCertificate, permissions: "0444" }]
            : []),
          // Owned by root, readable by group root: the official image (and the local build)
          // run pgAdmin as uid 5050 in group 0. (An owner would be looked up on the Docker host.)
          {
            file: PGADMIN_PATHS.password,
            content: pulumi.secret(args.password),
            permissions: "0440",
          },
        ],
        // pgAdmin answers only after creating its database and registering the servers (a few
        // seconds): the up waits for it, so pgadminUrl means a page that loads.
        healthcheck: {
          tests: [
            "CMD",
            "python3",
            "-c",
            `import urllib.request; urllib.request.urlopen("http://127.0.0.1:${PGADMIN_CONTAINER_PORT}/misc/ping", timeout=2)`,
          ],
          interval: "1s",
          timeout: "3s",
          retries: 120,
        },
        wait: true,
        waitTimeout: 180,
      },
      { parent: this, dependsOn: inheritedDependsOn(opts), deleteBeforeReplace: true },
    );
    this.registerOutputs({ container: this.container });
  }
}

/**
 * The servers file (`setup.py load-servers` format): one group, the cluster's name; no password
 * and no password file, so none is stored in the container.
 */
export function serversJson(
  args: Pick<PgAdminContainerArgs, "servers" | "clusterName" | "database" | "username"> & {
    readonly caCertificate?: unknown;
  },
): string {
  // pgAdmin 9 reads libpq's options here: with TLS, each server verifies the node (or the router's
  // name, which every node's certificate carries) against the cluster's CA (PGSSLROOTCERT).
  const connection = { sslmode: args.caCertificate ? "verify-full" : "prefer" };
  const servers = Object.fromEntries(
    args.servers.map((s, i) => [
      String(i + 1),
      {
        Name: s.name,
        Group: args.clusterName,
        Host: s.host,
        Port: s.port,
        MaintenanceDB: args.database,
        Username: args.username,
        ConnectionParameters: { ...connection, connect_timeout: 10 },
        // Listed by name: the cluster's database was created in initdb's single-user session,
        // with an OID below 16384, which pgAdmin otherwise takes for a system database and hides.
        DBRestriction: [...new Set([args.database, "postgres"])].join(","),
        DBRestrictionType: "databases",
        Comment: `pg-cluster ${args.clusterName}`,
      },
    ]),
  );
  return `${JSON.stringify({ Servers: servers }, null, 2)}\n`;
}

/**
 * The servers of a cluster as pgAdmin shows them: the router's two endpoints, then the primary
 * named by `primary`, then the other nodes, each on the cluster network.
 */
export function clusterServers(
  nodeNames: readonly string[],
  primary: string,
  routerName: string,
): PgAdminServer[] {
  return [
    { name: "read-write (router)", host: routerName, port: ROUTER_PORTS.readWrite },
    { name: "read-only (router)", host: routerName, port: ROUTER_PORTS.readOnly },
    { name: `primary: ${primary}`, host: primary, port: CONTAINER_PORT },
    ...nodeNames
      .filter((n) => n !== primary)
      .map((n) => ({ name: `replica: ${n}`, host: n, port: CONTAINER_PORT })),
  ];
}
