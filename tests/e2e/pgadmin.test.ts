/**
 * The tutorial's last step with our pgAdmin (issue 14), in a real headless Chromium: a wrong login
 * is refused; the right one shows the cluster's group with both router endpoints, the primary and
 * every replica; connecting to a replica (its password typed, none stored) and running
 * `SELECT * FROM wizards` in the Query Tool reads the seeded rows, over TLS verified against the
 * cluster's CA (the stack has `tls`); the UI is published on 127.0.0.1 only. That a change of
 * the nodes (a scale, a switchover) registers them again is the unit test's (tests/unit/
 * pgadmin.test.ts: the container's inputs change, and each new container loads servers.json); the
 * browser re-proving it cost CI about two minutes of its 15.
 */
import * as assert from "node:assert/strict";
import * as fs from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { after, describe, it } from "node:test";
import { announceOncePerLayer, isFirstMajorPass } from "../lib/majors";
import { PgAdminBrowser } from "../lib/pgadminBrowser";
import { SUPERUSER_PASSWORD, inspectContainer, newStack } from "../lib/stack";

const PGADMIN_PASSWORD = "e2e-pgAdmin-pw-5e1d";
const PGADMIN_IMAGE = process.env.PG_CLUSTER_E2E_PGADMIN_IMAGE ?? "pg-cluster-pgadmin:9.18";
/** Where the screenshot of the tree and the rows goes (README's picture is one of these). */
const SHOT = process.env.PG_CLUSTER_PGADMIN_SHOT;

/** Whether something accepts a TCP connection at host:port. */
function accepts(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port, timeout: 2000 });
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.once("connect", () => done(true));
    socket.once("error", () => done(false));
    socket.once("timeout", () => done(false));
  });
}

if (!isFirstMajorPass()) announceOncePerLayer("the pgAdmin test");
else
  describe("pgAdmin, in a real browser", { timeout: 600_000 }, () => {
    // 1 + 1: a replica to read on is all the test needs (a second one cost CI a clone).
    const stack = newStack("e2epga", {
      replicas: "1",
      pgadmin: "true",
      pgadminPassword: PGADMIN_PASSWORD,
      pgadminImage: PGADMIN_IMAGE,
      tls: "true",
    });
    const c = stack.clusterName;
    let browser: PgAdminBrowser | undefined;
    after(async () => {
      await browser?.close();
      await stack.remove();
    });

    it("logs in, shows every node by role, and reads the Wizards rows on a replica in the Query Tool", async () => {
      const { outputs } = await stack.up();
      const url = outputs.pgadminUrl as string;
      assert.equal(url, `http://localhost:${stack.basePort - 3}`);
      browser = await PgAdminBrowser.launch(url);

      const wrong = await browser.login("admin@example.com", "not-the-password");
      assert.match(wrong.refused ?? "", /Incorrect username or password/);
      assert.match(wrong.path, /^\/login/);
      await wrong.page.context().close();

      const { page, refused } = await browser.login("admin@example.com", PGADMIN_PASSWORD);
      assert.equal(refused, undefined, "the right login is accepted");
      const labels = await browser.labelsUnder(page, c);
      for (const server of [
        "read-write (router)",
        "read-only (router)",
        `primary: ${c}-primary`,
        `replica: ${c}-replica-1`,
      ]) {
        assert.ok(labels.includes(server), `${server} is registered (tree: ${labels.join(", ")})`);
      }

      // On a failure here, the page as it was is saved, and the error says where.
      const failure = path.join(os.tmpdir(), `pgadmin-failure-${stack.name}.png`);
      try {
        await browser.connect(page, `replica: ${c}-replica-1`, SUPERUSER_PASSWORD);
        const result = await browser.query(page, "mydb", "SELECT * FROM wizards ORDER BY id");
        assert.deepEqual(result.columns, ["id", "firstname", "lastname", "email"]);
        assert.deepEqual(
          result.rows.map((r) => r[1]),
          ["Harry", "Ron", "Hermione"],
          `the seeded Wizards rows: ${JSON.stringify(result.rows)}`,
        );
        if (SHOT) {
          fs.mkdirSync(path.dirname(SHOT), { recursive: true });
          await page.screenshot({ path: SHOT });
        }
        // And the server pgAdmin asked for its password is a standby.
        const standby = await browser.query(page, "mydb", "SELECT pg_is_in_recovery()");
        assert.deepEqual(standby.rows, [["true"]]);
        // Over TLS, which pgAdmin verified (sslmode=verify-full, the CA beside servers.json).
        const ssl = await browser.query(
          page,
          "mydb",
          "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        );
        assert.deepEqual(ssl.rows, [["true"]]);
      } catch (err) {
        await page.screenshot({ path: failure }).catch(() => {});
        throw new Error(`${(err as Error).message} (the page then: ${failure})`, { cause: err });
      }
      await page.context().close();

      // Published on 127.0.0.1 only: nothing answers on another loopback address.
      const info = (await inspectContainer(`${c}-pgadmin`)) as unknown as {
        HostConfig: { PortBindings: Record<string, { HostIp: string; HostPort: string }[]> };
      };
      assert.deepEqual(Object.values(info.HostConfig.PortBindings).flat(), [
        { HostIp: "127.0.0.1", HostPort: String(stack.basePort - 3) },
      ]);
      assert.equal(await accepts("127.0.0.1", stack.basePort - 3), true);
      assert.equal(await accepts("127.0.0.2", stack.basePort - 3), false);
    });
  });
