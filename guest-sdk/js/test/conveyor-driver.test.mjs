// Unit tests of the JavaScript SDK: `node --import ./test/wit-imports.mjs --test test/` in
// guest-sdk/js (tests/run.sh runs them). The parts that call the host are covered end to end by
// tests/polyglot.rs, against the real host.
import assert from "node:assert/strict";
import { beforeEach, test } from "node:test";

import { ClientError, DriverResult, Resource, client, defineDriver } from "../conveyor-driver.js";

beforeEach(() => {
  globalThis.witCalls = [];
  globalThis.witAnswers = {};
});

const event = (payload) => ({
  name: "create",
  payload: JSON.stringify(payload),
  runId: "run-1",
  messageId: "m-1",
  pipeline: undefined,
  attempt: 2,
});

test("results map to the WIT outcome", () => {
  assert.deepEqual(DriverResult.success("ok", { k: 1 }).toWit(), {
    outcome: { tag: "success" },
    message: "ok",
    data: '{"k":1}',
  });
  assert.deepEqual(DriverResult.failure("no").toWit().outcome, { tag: "failure" });
  assert.deepEqual(DriverResult.retry("later").toWit().outcome, { tag: "retry", val: undefined });
  // u64 travels as a BigInt.
  assert.deepEqual(DriverResult.retry("later", 1500).toWit().outcome, { tag: "retry", val: 1500n });
  assert.equal(DriverResult.retry("x", NaN).toWit().outcome.val, undefined);
  assert.equal(DriverResult.retry("x", Infinity).toWit().outcome.val, undefined);
  assert.equal(DriverResult.retry("x", -3).toWit().outcome.val, 0n);
  assert.equal(DriverResult.retry("x", 7n).toWit().outcome.val, 7n);
  assert.equal(DriverResult.retry("x", 2n ** 70n).toWit().outcome.val, 2n ** 64n - 1n);
  const cyclic = {};
  cyclic.self = cyclic;
  assert.match(DriverResult.success("x", cyclic).toWit().data, /did not serialise/);
});

test("payloads parse into resources", () => {
  const r = Resource.parse(
    JSON.stringify({
      name: "app",
      resource: "pipe",
      metadata: { version: "2", "driverresults.builder": '{"success":true}' },
      spec: { steps: 3 },
    }),
  );
  assert.equal(r.version, "2");
  assert.deepEqual(r.driverResult("builder"), { success: true });
  assert.equal(r.driverResult("other"), null);
  assert.throws(() => Resource.parse("[]"), TypeError);
  assert.throws(() => Resource.parse('{"name": 1}'), TypeError);
});

test("a driver logs with labels as text and returns its result", () => {
  const { info, reconcile } = defineDriver({
    name: "d",
    resources: ["pipe"],
    reconcile(payload, ev, runId, logger) {
      assert.equal(runId, "run-1");
      assert.equal(logger.attempt, 2);
      logger.log({ step: 1 }, "one");
      logger.log([["k", true]], "two");
      return DriverResult.success("done", { ev });
    },
  });
  assert.deepEqual(info(), { name: "d", resources: ["pipe"], events: [] });
  const out = reconcile(event({ name: "a", resource: "pipe", spec: {} }));
  assert.deepEqual(out.outcome, { tag: "success" });
  assert.equal(out.data, '{"ev":"create"}');
  assert.deepEqual(globalThis.witCalls, [
    ["log", [["step", "1"]], "one"],
    ["log", [["k", "true"]], "two"],
  ]);
});

test("an uncaught exception becomes a failed result and a stderr line", () => {
  const { reconcile } = defineDriver({
    name: "d",
    resources: ["pipe"],
    reconcile() {
      throw new RangeError("boom");
    },
  });
  const out = reconcile(event({ name: "a", resource: "pipe" }));
  assert.deepEqual(out.outcome, { tag: "failure" });
  assert.equal(out.message, "RangeError: boom");
});

test("a reconcile that returns something else fails clearly", () => {
  const { reconcile } = defineDriver({ name: "d", resources: [], reconcile: () => "ok" });
  assert.match(reconcile(event({ name: "a", resource: "p" })).message, /not a DriverResult/);
});

test("client errors become ClientError with the variant's kind", () => {
  globalThis.witAnswers.getResource = { error: { tag: "unavailable", val: "down" } };
  assert.throws(
    () => client.getResource("pipe", "a"),
    (e) => e instanceof ClientError && e.kind === "unavailable" && e.isTransient,
  );
  globalThis.witAnswers.getResourceDefinition = "not json";
  assert.throws(
    () => client.getResourceDefinition("pipe"),
    (e) => e instanceof ClientError && e.kind === "decode" && !e.isTransient,
  );
  globalThis.witAnswers.getResource = JSON.stringify({ name: "a", resource: "pipe", spec: {} });
  assert.equal(client.getResource("pipe", "a").name, "a");
});
