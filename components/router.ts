import * as crypto from "crypto";
import * as docker from "@pulumi/docker";
import * as pulumi from "@pulumi/pulumi";
import { CONTAINER_PORT } from "./assets";
import { clusterContainerArgs, inheritedDependsOn } from "./options";

/** Where the router's config is uploaded: the official haproxy image's path. */
export const ROUTER_CONFIG_PATH = "/usr/local/etc/haproxy/haproxy.cfg";
/** The router's ports on the cluster network: read-write, and read-only. */
export const ROUTER_PORTS = { readWrite: 5432, readOnly: 5433 } as const;
/** HAProxy's runtime API inside the router (loopback only): the topology step uses it. */
export const ROUTER_ADMIN_PORT = 9999;
/** The role the router's health checks log in as: no privileges, database postgres only. */
export const HEALTH_ROLE = "pgc_health";

/** A node as the router reaches it. */
export interface RouterServer {
  /** Node name: the server's name in HAProxy, and its host name on the cluster network. */
  readonly name: string;
  /**
   * Where the router connects: a node on another Docker host, at that host's address.
   * @default the node's name (on the router's own network)
   */
  readonly address?: string;
  /** Port at that address; 5432 in a container. @default 5432 */
  readonly port?: number;
}

/** How often a node's role is checked, and how quickly a change takes effect. */
export const CHECK_TIMING = {
  /** Between checks of a server that is up. */
  inter: "1s",
  /** Between checks once one has failed, until `fall` failures mark it down. */
  fastinter: "250ms",
  /** Between checks of a server that is down: a promoted standby is found within this. */
  downinter: "500ms",
  fall: 2,
  rise: 1,
} as const;

/**
 * The health check role's password: derived from the superuser password (HMAC-SHA256), so it is
 * a stable secret that needs no config of its own and changes when that password does.
 */
export function healthPassword(superuserPassword: string): string {
  return crypto
    .createHmac("sha256", superuserPassword)
    .update("pg-cluster router health check")
    .digest("base64url")
    .slice(0, 32);
}

/** A PostgreSQL protocol message: type byte (none for the startup message), length, body. */
function message(type: string, body: Buffer): Buffer {
  const length = Buffer.alloc(4);
  length.writeUInt32BE(body.length + 4);
  return Buffer.concat([Buffer.from(type, "latin1"), length, body]);
}

const cstring = (s: string) => Buffer.from(`${s}\0`, "utf8");

/**
 * The bytes of the role check: a StartupMessage as {@link HEALTH_ROLE}, its cleartext password,
 * then the answers a healthy node of the wanted role sends before its first ReadyForQuery. Every
 * server reports `in_hot_standby` at connection start since PostgreSQL 14 (libpq's
 * `target_session_attrs` reads the same), so the check runs no query.
 */
export function roleCheck(password: string, standby: boolean): string[] {
  const version = Buffer.alloc(4);
  version.writeUInt32BE(196608); // protocol 3.0
  const startup = message(
    "",
    Buffer.concat([
      version,
      ...["user", HEALTH_ROLE, "database", "postgres", "application_name", "pgc-router"].map(
        cstring,
      ),
      Buffer.from([0]),
    ]),
  );
  const hex = (b: Buffer) => b.toString("hex");
  return [
    "option tcp-check",
    "tcp-check connect",
    `tcp-check send-binary ${hex(startup)}`,
    // AuthenticationCleartextPassword (hba: `password`; SCRAM is beyond a fixed byte exchange).
    "tcp-check expect binary 520000000800000003",
    `tcp-check send-binary ${hex(message("p", cstring(password)))}`,
    // AuthenticationOk, then ReadyForQuery: every ParameterStatus has arrived by then.
    "tcp-check expect binary 520000000800000000",
    "tcp-check expect binary 5a0000000549",
    // Judged on what has arrived (min-recv 0): the wrong role fails at once, not by timeout.
    `tcp-check expect min-recv 0 binary ${hex(Buffer.concat([cstring("in_hot_standby"), cstring(standby ? "on" : "off")]))}`,
    `tcp-check send-binary ${hex(message("X", Buffer.alloc(0)))}`,
  ];
}

/**
 * HAProxy's configuration for the router: a read-write frontend on the one writable node and a
 * read-only frontend balanced over the standbys (the primary while none is up). Servers are
 * resolved through Docker's DNS, so a replaced node is followed; an unresolvable one waits.
 */
export function routerConfig(servers: readonly RouterServer[], password: string): string {
  const t = CHECK_TIMING;
  const backend = (name: string, standby: boolean, balance: string) => [
    `backend ${name}`,
    `  balance ${balance}`,
    `  default-server inter ${t.inter} fastinter ${t.fastinter} downinter ${t.downinter} fall ${t.fall} rise ${t.rise} on-marked-down shutdown-sessions resolvers docker init-addr last,libc,none`,
    ...roleCheck(password, standby).map((l) => `  ${l}`),
    ...servers.map(
      (s) => `  server ${s.name} ${s.address ?? s.name}:${s.port ?? CONTAINER_PORT} check`,
    ),
  ];
  return [
    "# Rendered by pg-cluster (components/router.ts); replaced, not edited.",
    "global",
    `  stats socket ipv4@127.0.0.1:${ROUTER_ADMIN_PORT} level admin`,
    // To `docker logs`: every server state change, and each session that ended abnormally (with
    // HAProxy's termination flags, which say whether the client, the server or a check ended it).
    "  log stdout format raw local0 info",
    "resolvers docker",
    "  nameserver dns 127.0.0.11:53",
    "  hold valid 1s",
    "defaults",
    "  mode tcp",
    "  log global",
    "  option tcplog",
    "  option dontlog-normal",
    "  option log-health-checks",
    // A refused connect (a node stopping) is retried once, on another server when there is one,
    // rather than three times on the same one a second apart (HAProxy's default); the pause
    // before a retry is min(timeout connect, 1s). A client so gets its session or its error
    // within about half a second, and reconnects to the new primary.
    "  retries 1",
    "  option redispatch 1",
    "  timeout connect 500ms",
    "  timeout check 2s",
    // Idle client sessions are closed after an hour (both directions); TCP keepalives keep
    // firewalls from dropping them sooner.
    "  timeout client 1h",
    "  timeout server 1h",
    "  option clitcpka",
    "  option srvtcpka",
    "frontend read_write",
    `  bind :${ROUTER_PORTS.readWrite}`,
    "  default_backend primary",
    "frontend read_only",
    `  bind :${ROUTER_PORTS.readOnly}`,
    "  use_backend standbys if { nbsrv(standbys) gt 0 }",
    "  default_backend primary",
    // `first`: should two nodes ever both be writable, every client still gets the same one.
    ...backend("primary", false, "first"),
    ...backend("standbys", true, "roundrobin"),
    "",
  ].join("\n");
}

/** Arguments of a {@link Router}. */
export interface RouterArgs {
  /** Container name, and its host name on the cluster network. */
  readonly routerName: string;
  readonly clusterName: string;
  readonly image: string;
  readonly networkName: pulumi.Input<string>;
  /** The nodes, in order. */
  readonly servers: readonly RouterServer[];
  /** Password of {@link HEALTH_ROLE}. */
  readonly healthPassword: pulumi.Input<string>;
  readonly bindAddress: string;
  readonly readWritePort: number;
  readonly readOnlyPort: number;
}

/**
 * The cluster's router: one HAProxy container on the cluster network whose two published ports
 * follow the roles (docs/design/primary-as-role.md, section E). It holds no state: restarting it
 * costs its clients a reconnect and loses no commit (commits are acknowledged by PostgreSQL).
 * Its config lists every node, so scaling replaces it (one reconnect per scale event).
 */
export class Router extends pulumi.ComponentResource {
  public readonly container: docker.Container;

  constructor(name: string, args: RouterArgs, opts?: pulumi.ComponentResourceOptions) {
    super("pg-cluster:index:Router", name, {}, opts);
    const config = pulumi.output(args.healthPassword).apply((pw) => routerConfig(args.servers, pw));
    this.container = new docker.Container(
      name,
      {
        ...clusterContainerArgs({
          containerName: args.routerName,
          clusterName: args.clusterName,
          networkName: args.networkName,
          bindAddress: args.bindAddress,
          ports: [
            [ROUTER_PORTS.readWrite, args.readWritePort],
            [ROUTER_PORTS.readOnly, args.readOnlyPort],
          ],
        }),
        image: args.image,
        entrypoints: ["haproxy"],
        command: ["-W", "-db", "-f", ROUTER_CONFIG_PATH],
        uploads: [{ file: ROUTER_CONFIG_PATH, content: pulumi.secret(config) }],
        // HAProxy's soft stop: it stops accepting, and existing sessions end when their clients go.
        stopSignal: "SIGUSR1",
        destroyGraceSeconds: 5,
      },
      { parent: this, dependsOn: inheritedDependsOn(opts) },
    );
    this.registerOutputs({ container: this.container });
  }
}
