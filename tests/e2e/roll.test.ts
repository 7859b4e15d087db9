/**
 * Changes that replace containers roll through the cluster (issue 10): a new image tag replaces
 * the standbys one at a time, each caught up before the next, then the primary after a switchover
 * away from it, and the primary moves back. Clients of the router's endpoints watch throughout: a
 * writer loses no acknowledged commit and pauses only for the switchovers; read-only sessions of
 * psql (a new session per query) never fail and never reach a primary.
 */
import * as assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import pg from "pg";
import { containerLogs, dockerApi } from "../lib/docker";
import { announceOncePerLayer, isFirstMajorPass } from "../lib/majors";
import { RoleProbe } from "../lib/roleProbe";
import {
  IMAGE,
  SUPERUSER_PASSWORD,
  inspectContainer,
  newStack,
  queryAt,
  sslFor,
} from "../lib/stack";
import { AckWriter } from "../lib/writer";

if (!isFirstMajorPass()) announceOncePerLayer("the roll test");
else
  describe("changes that replace containers roll one node at a time", { timeout: 900_000 }, () => {
    const stack = newStack("e2eroll");
    const c = stack.clusterName;
    const names = [`${c}-primary`, `${c}-replica-1`, `${c}-replica-2`];
    const endpoints = [0, 1, 2].map((i) => `localhost:${stack.basePort + i}`);
    const readWrite = `localhost:${stack.basePort - 2}`;
    const readOnly = `localhost:${stack.basePort - 1}`;
    // A second tag of the same local image: a new image for Pulumi and Docker, the same major.
    const [repo, tag] = IMAGE.split(":");
    const rolled = `${repo}:${tag}-roll-${stack.name}`;
    after(async () => {
      await stack.remove();
      await dockerApi("DELETE", `/images/${encodeURIComponent(rolled)}`);
    });

    it("rolls a new image tag under a writer and readers: no lost write, no failed read, the primary back where config says", async (t) => {
      await stack.up();
      await queryAt(endpoints[0], "CREATE TABLE acked (id int PRIMARY KEY)");
      const before = await Promise.all(names.map(async (n) => (await inspectContainer(n))?.Id));
      const tagged = await dockerApi(
        "POST",
        `/images/${encodeURIComponent(IMAGE)}/tag?repo=${encodeURIComponent(repo)}&tag=${encodeURIComponent(rolled.split(":")[1])}`,
      );
      assert.equal(
        tagged.status,
        201,
        `docker tag ${IMAGE} ${rolled}: ${JSON.stringify(tagged.data)}`,
      );

      const writer = new AckWriter({
        endpoints: [readWrite],
        password: SUPERUSER_PASSWORD,
        table: "acked",
      });
      const probes = {
        "psql read-only": new RoleProbe({
          endpoint: readOnly,
          password: SUPERUSER_PASSWORD,
          client: "psql",
        }),
        "node-postgres read-only": new RoleProbe({
          endpoint: readOnly,
          password: SUPERUSER_PASSWORD,
          client: "node-postgres",
        }),
      };
      writer.start();
      for (const p of Object.values(probes)) p.start();
      t.after(() => Promise.all([writer, ...Object.values(probes)].map((x) => x.stop())));
      await new Promise((r) => setTimeout(r, 500));
      const upStart = Date.now();
      const { outputs } = await stack.up({ image: rolled });
      const upDone = Date.now();
      await new Promise((r) => setTimeout(r, 1000));
      await writer.stop();
      await Promise.all(Object.values(probes).map((p) => p.stop()));

      process.stderr.write(
        `roll to ${rolled}: up ${upDone - upStart} ms; writer ${writer.acked.length} acknowledged, longest gap ${writer.longestGapMs()} ms\n`,
      );
      for (const [what, probe] of Object.entries(probes)) {
        const answers = probe.answers();
        process.stderr.write(
          `  ${what}: ${answers.length} answers, ${probe.observations.length - answers.length} errors, longest silence ${probe.longestSilenceMs()} ms\n`,
        );
        assert.deepEqual(
          answers.filter((a) => !a.standby).map((a) => `${a.node} at +${a.t - upStart} ms`),
          [],
          `${what} reached only standbys`,
        );
        assert.ok(answers[answers.length - 1].t > upDone, `${what} answered after the roll`);
      }
      // A new session per query: draining a standby before its replacement loses none of them.
      const psqlErrors = probes["psql read-only"].observations.filter((o) => o.error);
      assert.deepEqual(
        psqlErrors.map((o) => `${new Date(o.t).toISOString()} (+${o.t - upStart} ms): ${o.error}`),
        [],
        `no failed read-only query; what the gates and the topology step did:\n${stack
          .lastLog()
          .split("\n")
          .filter((l) => / pg-cluster: /.test(l))
          .join(
            "\n",
          )}\nthe router's log (state changes, sessions that ended abnormally):\n${containerLogs(`${c}-router`)}`,
      );

      for (const [i, name] of names.entries()) {
        const now = await inspectContainer(name);
        assert.notEqual(now?.Id, before[i], `${name} was replaced`);
        const image = (now as unknown as { Config: { Image: string } }).Config.Image;
        assert.equal(image, rolled, `${name} runs the new image`);
        const rows = await queryAt<{ id: number }>(endpoints[i], "SELECT id FROM acked");
        const have = new Set(rows.map((r) => r.id));
        assert.deepEqual(
          writer.acked.filter((id) => !have.has(id)),
          [],
          `every acknowledged id is on ${name}`,
        );
      }
      assert.ok(writer.acked.length > 10, "the writer wrote throughout");
      assert.ok(writer.ackTimes[writer.ackTimes.length - 1] > upDone, "and after the roll");

      const report = outputs.replicationReport as {
        primary: { name: string; lastUp: string };
        replicas: { name: string; lastUp: string; caughtUp: boolean; clones?: number }[];
      };
      assert.equal(report.primary.name, names[0], "the primary is back on the node config names");
      assert.equal(report.primary.lastUp, "replaced");
      for (const r of report.replicas) {
        assert.equal(r.lastUp, "replaced", `${r.name} replaced`);
        assert.equal(r.caughtUp, true);
        assert.equal(r.clones ?? 0, r.name === names[0] ? 0 : 1, `${r.name} was not re-cloned`);
      }
      // One at a time: no two node containers were ever down together. Each was started after
      // the one before it in the chain (replica-1, replica-2, then the primary) was.
      const started = await Promise.all(
        names.map(async (n) => Date.parse((await inspectContainer(n))?.State.StartedAt ?? "")),
      );
      assert.ok(started[1] < started[2] && started[2] < started[0], `start order ${started}`);
      const again = await stack.preview({ image: rolled });
      assert.equal(again.summary.replace + again.summary.update + again.summary.create, 0);
    });

    it("rolls a password change: the running primary takes the new passwords first, no write is lost", async (t) => {
      const su = "e2e-Su-pw-rolled-77a1";
      const repl = "e2e-Repl-pw-rolled-3b9c";
      const writer = new AckWriter({
        endpoints: [readWrite],
        password: SUPERUSER_PASSWORD,
        table: "acked",
        firstId: 10_000_000,
      });
      writer.start();
      t.after(() => writer.stop());
      await new Promise((r) => setTimeout(r, 300));
      const { outputs } = await stack.up({
        image: rolled,
        superuserPassword: su,
        replicationPassword: repl,
      });
      await writer.stop();
      // The writer logged in before the change; its session kept working until its node's
      // container was replaced, and it could not log in again with the old password after.
      const report = outputs.replicationReport as {
        replicas: { name: string; caughtUp: boolean }[];
      };
      assert.ok(
        report.replicas.every((r) => r.caughtUp),
        "every standby caught up",
      );
      for (const endpoint of [...endpoints, readWrite, readOnly]) {
        const [host, port] = endpoint.split(":");
        const login = async (password: string) => {
          const c = new pg.Client({
            host,
            port: Number(port),
            user: "postgres",
            password,
            database: "mydb",
            ssl: sslFor(endpoint),
          });
          try {
            await c.connect();
            return "accepted";
          } catch (err) {
            return String(err);
          } finally {
            await c.end().catch(() => {});
          }
        };
        assert.equal(await login(su), "accepted", `${endpoint} takes the new password`);
        assert.match(
          await login(SUPERUSER_PASSWORD),
          /password authentication failed/,
          `${endpoint} refuses the old one`,
        );
      }
      const c = new pg.Client({
        host: "localhost",
        port: stack.basePort,
        user: "postgres",
        password: su,
        database: "mydb",
        ssl: sslFor(endpoints[0]),
      });
      await c.connect();
      try {
        const have = new Set(
          (await c.query<{ id: number }>("SELECT id FROM acked")).rows.map((r) => r.id),
        );
        assert.deepEqual(
          writer.acked.filter((id) => !have.has(id)),
          [],
          "every acknowledged id survived",
        );
      } finally {
        await c.end();
      }
      process.stderr.write(
        `password roll: ${writer.acked.length} acknowledged before the writer's login broke\n`,
      );
    });
  });
