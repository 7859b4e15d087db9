import * as command from "@pulumi/command";
import * as pulumi from "@pulumi/pulumi";
import { ASSETS_DIR } from "./assets";
import { inheritedDependsOn } from "./options";

/** Where a node's TLS files are uploaded (lib.sh PGC_TLS_DIR). */
export const CONTAINER_TLS_DIR = "/run/secrets/pg-cluster-tls";

/** How long the CA and each node's certificate are valid, in days. */
export const TLS_DAYS = { ca: 3650, node: 825 } as const;

/** A certificate and its private key, PEM. */
export interface KeyPair {
  certificate: string;
  key: string;
}

/** The names a node's certificate is valid for: every name and address it is dialled at. */
export interface TlsSubject {
  readonly nodeName: string;
  readonly dnsNames: readonly string[];
  readonly ipAddresses: readonly string[];
}

/** Arguments of a {@link ClusterTls}. */
export interface ClusterTlsArgs {
  readonly clusterName: string;
  readonly nodes: readonly TlsSubject[];
}

/**
 * The cluster's TLS material, made by the program (assets/tls.mjs, @peculiar/x509 on Node's
 * WebCrypto) in `local.Command` steps whose output is secret and never logged: a CA, made once,
 * and a certificate per node, made again when the names it must carry change. A certificate
 * change reaches the nodes as a roll (their containers carry the files), with no outage.
 */
export class ClusterTls extends pulumi.ComponentResource {
  /** The CA certificate (public), for clients' `sslrootcert`. */
  public readonly caCertificate: pulumi.Output<string>;
  /** Each node's certificate, key and the CA certificate (secret), by node name. */
  public readonly nodeFiles: ReadonlyMap<string, pulumi.Output<KeyPair>>;

  constructor(name: string, args: ClusterTlsArgs, opts?: pulumi.ComponentResourceOptions) {
    super("pg-cluster:index:ClusterTls", name, {}, opts);
    const dependsOn = inheritedDependsOn(opts);
    const ca = tlsStep(
      `${name}-ca`,
      "ca",
      { PGC_TLS_CA_NAME: `${args.clusterName} CA`, PGC_TLS_DAYS: String(TLS_DAYS.ca) },
      { parent: this, dependsOn },
    );
    this.caCertificate = pulumi.unsecret(ca.apply((c) => c.certificate));
    const files = new Map<string, pulumi.Output<KeyPair>>();
    for (const n of args.nodes) {
      files.set(
        n.nodeName,
        tlsStep(
          `${n.nodeName}-tls`,
          "node",
          {
            PGC_TLS_CA_CERT: ca.apply((c) => c.certificate),
            PGC_TLS_CA_KEY: ca.apply((c) => c.key),
            PGC_TLS_NODE_NAME: n.nodeName,
            PGC_TLS_DNS_NAMES: JSON.stringify(n.dnsNames),
            PGC_TLS_IP_ADDRESSES: JSON.stringify(n.ipAddresses),
            PGC_TLS_DAYS: String(TLS_DAYS.node),
          },
          { parent: this, dependsOn },
        ),
      );
    }
    this.nodeFiles = files;
    this.registerOutputs({ caCertificate: this.caCertificate });
  }
}

/**
 * One run of assets/tls.mjs: its JSON (a certificate and key), secret. Runs again only when its
 * environment changes; stdout is not logged (the engine would print the key).
 */
function tlsStep(
  name: string,
  verb: "ca" | "node",
  environment: Record<string, pulumi.Input<string>>,
  opts: pulumi.CustomResourceOptions,
): pulumi.Output<KeyPair> {
  const step = new command.local.Command(
    name,
    {
      create: `node tls.mjs ${verb}`,
      dir: ASSETS_DIR,
      environment: pulumi.secret(environment),
      logging: "stderr",
    },
    { ...opts, additionalSecretOutputs: ["stdout"] },
  );
  return pulumi.secret(step.stdout.apply((out) => JSON.parse(out) as KeyPair));
}

/** The uploads of a node's TLS files: the key 0600 (the entrypoint gives it to postgres). */
export function tlsUploads(files: pulumi.Output<KeyPair>, caCertificate: pulumi.Input<string>) {
  return [
    { file: `${CONTAINER_TLS_DIR}/server.crt`, content: files.apply((f) => f.certificate) },
    {
      file: `${CONTAINER_TLS_DIR}/server.key`,
      content: pulumi.secret(files.apply((f) => f.key)),
      permissions: "0600",
    },
    { file: `${CONTAINER_TLS_DIR}/ca.crt`, content: caCertificate },
  ];
}
