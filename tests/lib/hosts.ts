/**
 * The multi-host harness's Docker hosts (scripts/hosts.sh: engines in network namespaces on a
 * test-only bridge), as the hosts layer and `npm run bench:hosts` drive them.
 */
import { execFileSync, spawnSync } from "node:child_process";
import * as path from "node:path";

const SCRIPT = path.resolve(__dirname, "..", "..", "scripts", "hosts.sh");

/** A host as the `hosts` argument takes it. */
export interface TestHost {
  name: string;
  dockerHost: string;
  address: string;
}

/** Host n (1..count) as scripts/hosts.sh lays them out: h<n> at 10.213.77.(10 + n). */
export function testHosts(count: number): TestHost[] {
  return Array.from({ length: count }, (_, i) => ({
    name: `h${i + 1}`,
    dockerHost: `unix:///run/pg-cluster-hosts/h${i + 1}.sock`,
    address: `10.213.77.${11 + i}`,
  }));
}

/** Runs scripts/hosts.sh with `args`; its stdout, or an error with its stderr. */
export function hostsScript(...args: string[]): string {
  const r = spawnSync("bash", [SCRIPT, ...args], { encoding: "utf8", timeout: 300_000 });
  if (r.status !== 0) throw new Error(`scripts/hosts.sh ${args.join(" ")}: ${r.stderr}`);
  return r.stdout;
}

/** The docker CLI against one host's engine; its trimmed stdout. */
export function dockerOn(host: TestHost, ...args: string[]): string {
  return execFileSync("docker", ["-H", host.dockerHost, ...args], { encoding: "utf8" }).trim();
}
