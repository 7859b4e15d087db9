import * as pulumi from "@pulumi/pulumi";
import { ClusterSettings, PostgresClusterArgs, ProblemList, validateClusterArgs } from "./settings";

/** Stack config keys that hold numbers (Pulumi stores every config value as a string). */
const NUMBER_KEYS = [
  "replicas",
  "primaryPort",
  "replicaBasePort",
  "readWritePort",
  "readOnlyPort",
  "synchronousReplicas",
  "verifyTimeoutSeconds",
  "pgadminPort",
  "backupRetentionFull",
  "backupPort",
] as const;
/** Stack config keys that hold strings. */
const STRING_KEYS = [
  "image",
  "routerImage",
  "tlsRenewal",
  "bindAddress",
  "host",
  "database",
  "superuser",
  "replicationUser",
  "maxSlotWalKeepSize",
  "maxWalSize",
  "primary",
  "switchoverMaxLag",
  "pgadminEmail",
  "pgadminImage",
  "backupTrigger",
  "backupType",
  "backupCompress",
  "backupTarget",
  "backupRepositoryPath",
  "backupHost",
  "restoreRepository",
  "restoreStanza",
  "restoreTargetTime",
  "restoreTargetLsn",
] as const;

/** Reads one raw config value; a function so tests can supply a plain map. */
export type ConfigReader = (key: string) => string | undefined;

/**
 * Builds {@link PostgresClusterArgs} from stack config and validates them, with the name the
 * cluster will have when one is given, reporting every problem (unparseable numbers and a name
 * that does not fit included) in one error before any resource exists.
 */
export function clusterArgsFromConfig(
  read: ConfigReader,
  clusterName?: string,
): {
  args: PostgresClusterArgs;
  settings: ClusterSettings;
} {
  const problems = new ProblemList();
  const numbers: Record<string, number | undefined> = {};
  for (const key of NUMBER_KEYS) {
    const raw = read(key);
    if (raw === undefined) continue;
    const trimmed = raw.trim();
    if (/^-?[0-9]+(\.[0-9]+)?$/.test(trimmed)) {
      numbers[key] = Number(trimmed);
    } else {
      problems.add(key, raw, "must be a whole number", `pulumi config set ${key} <number>`);
    }
  }
  const strings: Record<string, string | undefined> = {};
  for (const key of STRING_KEYS) strings[key] = read(key);
  // Read the passwords as plain strings so they can be validated now; the component wraps them
  // in pulumi.secret, and Pulumi keeps them encrypted in config and state.
  const { pgadminPort, backupRetentionFull, backupPort, ...clusterNumbers } = numbers;
  const {
    pgadminEmail,
    pgadminImage,
    backupTrigger,
    backupType,
    backupCompress,
    backupTarget,
    backupRepositoryPath,
    backupHost,
    restoreRepository,
    restoreStanza,
    restoreTargetTime,
    restoreTargetLsn,
    ...clusterStrings
  } = strings;
  const tls = read("tls")?.trim();
  if (tls !== undefined && tls !== "true" && tls !== "false") {
    problems.add("tls", tls, "must be true or false", "pulumi config set tls true");
  }
  const backup = read("backup")?.trim();
  if (backup !== undefined && backup !== "true" && backup !== "false") {
    problems.add("backup", backup, "must be true or false", "pulumi config set backup true");
  }
  const pgadmin = read("pgadmin")?.trim();
  if (pgadmin !== undefined && pgadmin !== "true" && pgadmin !== "false") {
    problems.add("pgadmin", pgadmin, "must be true or false", "pulumi config set pgadmin true");
  }
  // Structured keys (`pulumi config set --path 'hosts[0].name' h1`) arrive as JSON text.
  const structured = (key: string, fix: string): unknown => {
    const raw = read(key);
    if (raw === undefined) return undefined;
    try {
      return JSON.parse(raw);
    } catch {
      problems.add(key, raw, "must be a list (set it with --path)", fix);
      return undefined;
    }
  };
  const hosts = structured(
    "hosts",
    "pulumi config set --path 'hosts[0].name' h1 (and dockerHost, address)",
  );
  const placement = structured("placement", "pulumi config set --path 'placement[0]' h1");
  const args: PostgresClusterArgs = {
    ...clusterStrings,
    ...(hosts === undefined ? {} : { hosts: hosts as PostgresClusterArgs["hosts"] }),
    ...(placement === undefined
      ? {}
      : { placement: placement as PostgresClusterArgs["placement"] }),
    ...clusterNumbers,
    ...(tls === undefined ? {} : { tls: tls === "true" }),
    superuserPassword: read("superuserPassword") as string,
    replicationPassword: read("replicationPassword") as string,
    // Flat keys in stack config (pgadmin, pgadminPort, ...), one object for the component.
    pgadmin: {
      enabled: pgadmin === "true",
      port: pgadminPort,
      email: pgadminEmail,
      image: pgadminImage,
      password: read("pgadminPassword"),
    },
    // Flat keys (backup, backupRetentionFull, backupTrigger, ..., backupTarget) likewise.
    backup: {
      enabled: backup === "true",
      retentionFull: backupRetentionFull,
      trigger: backupTrigger,
      type: backupType,
      compress: backupCompress,
      target: backupTarget,
      repositoryPath: backupRepositoryPath,
      host: backupHost,
      port: backupPort,
    },
    // restoreRepository, restoreStanza, restoreTargetTime, restoreTargetLsn likewise.
    ...(restoreRepository === undefined &&
    restoreStanza === undefined &&
    restoreTargetTime === undefined &&
    restoreTargetLsn === undefined
      ? {}
      : {
          restore: {
            repository: restoreRepository as string,
            ...(restoreStanza === undefined ? {} : { stanza: restoreStanza }),
            ...(restoreTargetTime === undefined ? {} : { targetTime: restoreTargetTime }),
            ...(restoreTargetLsn === undefined ? {} : { targetLsn: restoreTargetLsn }),
          },
        }),
  };
  return { args, settings: validateClusterArgs(args, problems, clusterName) };
}

/** A {@link ConfigReader} over the current project's stack config. */
export function stackConfigReader(config: pulumi.Config = new pulumi.Config()): ConfigReader {
  return (key) => config.get(key);
}
