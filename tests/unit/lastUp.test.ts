/**
 * What the replication report says an up did to each node (assets/pgnode.mjs changeSince), from
 * the clocks the post-step reads: PG_VERSION's modification time (whole seconds), the server's
 * start and configuration load times, and the container's creation time.
 */
import * as assert from "node:assert/strict";
import { describe, it } from "node:test";
import { changeSince } from "../../assets/pgnode.mjs";

const since = new Date("2026-11-26T22:08:32.698Z");
const at = (s: string) => new Date(`2026-11-26T${s}Z`);
/** A node untouched since a day before the previous up. */
const old = { data: at("00:00:00"), started: at("00:00:01"), loaded: at("00:00:01") };

describe("what an up did to a node", () => {
  it("is 'created' for every node of a cluster with no verified up before", () => {
    assert.equal(changeSince(old, null), "created");
  });

  it("is 'nothing', 'reloaded', 'restarted' or 'replaced' by the newest clock past the marker", () => {
    assert.equal(changeSince({ ...old, container: at("00:00:00.5") }, since), "nothing");
    assert.equal(changeSince({ ...old, loaded: at("22:09:00") }, since), "reloaded");
    const restarted = { ...old, started: at("22:09:00"), loaded: at("22:09:00") };
    assert.equal(changeSince(restarted, since), "restarted");
    assert.equal(changeSince({ ...restarted, container: at("22:08:59.1") }, since), "replaced");
  });

  it("is 'created' for a new node and for a re-clone in a container older than the marker", () => {
    const fresh = { data: at("22:09:05"), started: at("22:09:06"), loaded: at("22:09:06") };
    assert.equal(changeSince({ ...fresh, container: at("22:09:04.2") }, since), "created");
    // Clone written within the second its container was created: PG_VERSION has whole seconds.
    assert.equal(changeSince({ ...fresh, container: at("22:09:05.8") }, since), "created");
    assert.equal(changeSince({ ...fresh, container: at("20:00:00") }, since), "created");
    assert.equal(changeSince(fresh, since), "created");
  });

  it("is 'replaced', not 'created', for a node whose clone ended after the previous marker but before its new container", () => {
    // The previous release wrote its marker while this replica was still cloning; this up then
    // replaced its container on that data (seen in CI upgrading from v0.1.0).
    const t = {
      data: at("22:08:33"),
      started: at("22:09:04"),
      loaded: at("22:09:04"),
      container: at("22:09:03.5"),
    };
    assert.equal(changeSince(t, since), "replaced");
  });
});
