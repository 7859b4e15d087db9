/**
 * The e2e layer runs once per PostgreSQL major (PG_CLUSTER_E2E_MAJORS, default "15 17"; see
 * scripts/test.sh). Tests whose subject does not depend on the server's version (the package's
 * schema, an example program) run in the first pass only, to keep CI within its time budget.
 */
export function isFirstMajorPass(): boolean {
  const first = (process.env.PG_CLUSTER_E2E_MAJORS ?? "15 17").trim().split(/\s+/)[0];
  const image = process.env.PG_CLUSTER_E2E_IMAGE ?? `pg-cluster-postgres:${first}`;
  return image.endsWith(`:${first}`);
}

/** Why a version-independent test file registered nothing in this pass (printed, not hidden). */
export function announceOncePerLayer(what: string): void {
  process.stderr.write(
    `NOTE: ${what} runs in the e2e layer's first pass only (PostgreSQL ${(process.env.PG_CLUSTER_E2E_MAJORS ?? "15 17").trim().split(/\s+/)[0]}); this pass is ${process.env.PG_CLUSTER_E2E_IMAGE}.\n`,
  );
}

/**
 * The router image every e2e stack runs (PG_CLUSTER_E2E_ROUTER_IMAGE; default the local build of
 * scripts/provision-image.sh --local router, since no registry is reachable here).
 */
export const ROUTER_IMAGE = process.env.PG_CLUSTER_E2E_ROUTER_IMAGE ?? "pg-cluster-haproxy:2.6";
