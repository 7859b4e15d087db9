/**
 * Embedding pg-cluster in a larger program: two clusters (one through an explicit docker
 * provider) and an application container on the first cluster's network that reads the Wizards
 * table through the router's read-only endpoint, found by its in-network address.
 *
 * Config: `image` (default postgres:16), `routerImage` (default haproxy:2.6), `basePort` (default
 * 6432: orders uses basePort..basePort + 3, its nodes then its router; inventory basePort + 4..6),
 * and the secrets `superuserPassword`, `replicationPassword` (shared by both clusters here to keep
 * the example short).
 */
import * as docker from "@pulumi/docker";
import * as pulumi from "@pulumi/pulumi";
import { PostgresCluster } from "pg-cluster";

const config = new pulumi.Config();
const image = config.get("image") ?? "postgres:16";
const routerImage = config.get("routerImage") ?? "haproxy:2.6";
const basePort = config.getNumber("basePort") ?? 6432;
const passwords = {
  superuserPassword: config.requireSecret("superuserPassword"),
  replicationPassword: config.requireSecret("replicationPassword"),
};
const prefix = `${pulumi.getProject()}-${pulumi.getStack()}`;

const orders = new PostgresCluster(`${prefix}-orders`, {
  replicas: 1,
  image,
  routerImage,
  primaryPort: basePort,
  replicaBasePort: basePort + 1,
  readWritePort: basePort + 2,
  ...passwords,
});

// A provider of its own, as a program that manages a remote Docker host would pass one.
const localDocker = new docker.Provider("local-docker", { host: "unix:///var/run/docker.sock" });
const inventory = new PostgresCluster(
  `${prefix}-inventory`,
  {
    replicas: 0,
    image,
    routerImage,
    primaryPort: basePort + 4,
    readWritePort: basePort + 5,
    ...passwords,
  },
  { provider: localDocker },
);

// The app reads through the router's read-only endpoint on the cluster's network, which stays
// valid across switchovers. Its password arrives as a passfile (mode 0600 before use: libpq
// ignores a password file others can read), not as an environment variable that `docker
// inspect` would show.
const replica = orders.internalReadOnlyEndpoint.apply((endpoint) => endpoint.split(":"));
const pgpass = pulumi.interpolate`${replica[0]}:${replica[1]}:*:postgres:${passwords.superuserPassword}\n`;
const reader = new docker.Container(
  `${prefix}-reader`,
  {
    name: `${prefix}-reader`,
    image,
    networksAdvanced: [{ name: orders.networkName }],
    envs: [pulumi.interpolate`PGHOST=${replica[0]}`, pulumi.interpolate`PGPORT=${replica[1]}`],
    uploads: [{ file: "/run/reader/pgpass", content: pgpass }],
    entrypoints: ["bash", "-c"],
    command: [
      [
        "chmod 600 /run/reader/pgpass",
        "export PGPASSFILE=/run/reader/pgpass PGUSER=postgres PGDATABASE=mydb",
        "while :; do",
        "  echo \"wizards: $(psql -XAtc \"SELECT string_agg(firstname, ',' ORDER BY id) || ' from ' || current_setting('cluster_name') FROM wizards\" 2>&1)\"",
        "  sleep 1",
        "done",
      ].join("\n"),
    ],
    restart: "unless-stopped",
  },
  // After the cluster is verified (its outputs, used above, resolve only then).
  { dependsOn: [orders] },
);

export const ordersEndpoint = orders.primaryEndpoint;
export const ordersReadOnlyInNetwork = orders.internalReadOnlyEndpoint;
export const inventoryEndpoint = inventory.primaryEndpoint;
export const inventoryNetwork = inventory.networkName;
export const readerName = reader.name;
