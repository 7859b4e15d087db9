/**
 * A minimal Docker Engine API client over the local unix socket, for the tests' probes
 * (inspect a container, list a cluster's objects). Hand-written rather than a library: the tests
 * read a handful of fields from three GET endpoints, and node:http speaks to a unix socket as is.
 */
import { spawnSync } from "node:child_process";
import * as http from "node:http";

const DOCKER_SOCKET = process.env.DOCKER_SOCKET ?? "/var/run/docker.sock";

/** Docker Engine API JSON: untyped on purpose, callers read a handful of fields. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type DockerJson = any;

/**
 * One Docker Engine API call (API v1.41, https://docs.docker.com/engine/api/v1.41/): resolves with
 * the HTTP status and the parsed JSON body (the raw text if it is not JSON); rejects only when the
 * engine cannot be reached, with the fix.
 */
export function dockerApi(
  method: string,
  apiPath: string,
  body?: unknown,
): Promise<{ status: number; data: DockerJson }> {
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const req = http.request(
      {
        socketPath: DOCKER_SOCKET,
        path: `/v1.41${apiPath}`,
        method,
        headers: payload
          ? { "Content-Type": "application/json", "Content-Length": payload.length }
          : {},
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c) => chunks.push(c));
        res.on("end", () => {
          const text = Buffer.concat(chunks).toString("utf8");
          let data: DockerJson = text;
          try {
            data = text ? JSON.parse(text) : null;
          } catch {
            /* plain text */
          }
          resolve({ status: res.statusCode ?? 0, data });
        });
      },
    );
    req.on("error", (err: NodeJS.ErrnoException) =>
      reject(
        new Error(
          `cannot reach the Docker engine at unix://${DOCKER_SOCKET} (${err.code ?? err.message}). Fix: start it (bash scripts/provision-docker.sh starts Debian's dockerd), then run again.`,
        ),
      ),
    );
    if (payload) req.write(payload);
    req.end();
  });
}

/** The last `lines` lines a container printed (stdout and stderr, timestamped), for a failing test's message. */
export function containerLogs(name: string, lines = 60): string {
  const r = spawnSync("docker", ["logs", "-t", "--tail", String(lines), name], {
    encoding: "utf8",
  });
  return `${r.stdout ?? ""}${r.stderr ?? ""}`;
}
