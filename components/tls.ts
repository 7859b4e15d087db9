import * as command from "@pulumi/command";
import * as pulumi from "@pulumi/pulumi";
import { ASSETS_DIR } from "./assets";
import { inheritedDependsOn } from "./options";

/**
 * Where a node keeps its TLS files: on its volume (lib.sh PGC_TLS_DIR), installed there by
 * `ctl.sh tls` from the topology step, so a new certificate needs no new container.
 */
export const CONTAINER_TLS_DIR = "/var/lib/postgresql/data/conf/tls";

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
  /** Any new value re-issues the nodes' certificates (`tlsRenewal`). */
  readonly renewal: string;
}

/** Each node's certificate is re-issued by the first up of every window this long. */
export const TLS_RENEWAL_WINDOW_DAYS = 365;

/** The renewal window `at` falls in (days since 1970 over the window's length). */
export function renewalWindow(at = Date.now()): number {
  return Math.floor(at / 86_400_000 / TLS_RENEWAL_WINDOW_DAYS);
}

/**
 * The cluster's TLS material, made by the program (assets/tls.mjs, @peculiar/x509 on Node's
 * WebCrypto) in `local.Command` steps whose output is secret and never logged: a CA, made once,
 * and a certificate per node, made again when the names it must carry change. The topology step
 * installs them on the nodes (`ctl.sh tls`, then a reload): a new certificate replaces nothing.
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
            // A change makes the step run again: a new certificate and key.
            PGC_TLS_RENEWAL: `${renewalWindow()}:${args.renewal}`,
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

/**
 * What `ctl.sh tls` reads on stdin, by node name (`names`, or every subject): the CA's
 * certificate, the node's certificate, then its key (PEM). Secret.
 */
export function tlsBundles(
  tls: ClusterTls,
  names: readonly string[] = [...tls.nodeFiles.keys()],
): pulumi.Output<string> {
  const files: pulumi.Output<KeyPair[]> = pulumi.all(names.map((n) => tls.nodeFiles.get(n)!));
  return pulumi.secret(
    pulumi
      .all([tls.caCertificate, files])
      .apply(([ca, pairs]) =>
        JSON.stringify(
          Object.fromEntries(
            names.map((n, i) => [
              n,
              [ca, pairs[i].certificate, pairs[i].key].map((pem) => pem.trim()).join("\n"),
            ]),
          ),
        ),
      ),
  );
}
