// Write Conveyor CI drivers in JavaScript, as WebAssembly components for conveyor-host.
//
// The JavaScript form of the Rust SDK (crate `conveyor-driver`): a driver is an object with a
// `name`, the `resources` it listens to and a `reconcile` function, exported with one line:
//
//     import { defineDriver, DriverResult } from "conveyor-driver";
//
//     export const { info, reconcile } = defineDriver({
//       name: "sample-driver",
//       resources: ["resource-1"],
//       reconcile(payload, event, runId, logger) {
//         logger.log({ step: "1" }, "working");
//         return DriverResult.success("Sample Driver Reconciled Successfully");
//       },
//     });
//
// Build it with jco (`jco componentize app.js --wit wit -n driver --bundle`), which bundles this
// module into the component; examples/js-driver/build.mjs is a complete build. Each event runs
// in a fresh instance: module state does not survive from one event to the next.

import { log as witLog } from "conveyor:driver/log@0.1.0";
import * as witClient from "conveyor:driver/client@0.1.0";

/** The run's log, and the context of the event being handled. */
export class Logger {
  constructor(ev) {
    /** The run id, also passed to `reconcile`. */
    this.runId = ev.runId;
    /** The id of the message that carried the event; the same on every redelivery. */
    this.messageId = ev.messageId;
    /** The pipeline this run belongs to, if any. */
    this.pipeline = ev.pipeline ?? null;
    /** Which delivery this is: 1 for the first, 2 for the first retry, and so on. */
    this.attempt = ev.attempt;
  }

  /**
   * Records one log line with labels, like the Go runtime's `logger.Log(labels, message)`.
   * `labels` is an object or an iterable of [key, value] pairs; values are turned into text.
   */
  log(labels, message) {
    const entries =
      labels == null
        ? []
        : typeof labels[Symbol.iterator] === "function"
          ? Array.from(labels)
          : Object.entries(labels);
    witLog(
      entries.map(([k, v]) => [String(k), String(v)]),
      String(message),
    );
  }

  /** Records one log line without labels. */
  info(message) {
    this.log(null, message);
  }
}

/**
 * What `reconcile` returns: Conveyor's `DriverResult` (success, message, data) plus an optional
 * request to be retried. Make one with `success`, `failure` or `retry`.
 */
export class DriverResult {
  constructor(ok, message, data = undefined, transient = false, afterMs = undefined) {
    /** Whether the work succeeded. */
    this.ok = ok;
    /** A human-readable summary. */
    this.message = String(message);
    /** Structured output (anything `JSON.stringify` accepts), stored as the result's `data`. */
    this.data = data;
    /** For a failure: deliver the event again later. */
    this.transient = transient;
    /** The least delay in milliseconds before the next attempt; undefined leaves it to the host. */
    this.afterMs = afterMs;
  }

  /** A successful result with a message and optional data. */
  static success(message, data) {
    return new DriverResult(true, message, data);
  }

  /** A permanent failure: the event is not delivered again. */
  static failure(message, data) {
    return new DriverResult(false, message, data);
  }

  /**
   * A transient failure: the host delivers the event again (after at least `afterMs`
   * milliseconds if given, else with exponential backoff) until its attempt limit.
   */
  static retry(message, afterMs, data) {
    return new DriverResult(false, message, data, true, afterMs);
  }

  /** Attaches structured output and returns the result. */
  withData(data) {
    this.data = data;
    return this;
  }

  toWit() {
    let outcome;
    if (this.ok) outcome = { tag: "success" };
    else if (this.transient) outcome = { tag: "retry", val: delay(this.afterMs) };
    else outcome = { tag: "failure" };
    let data;
    if (this.data !== undefined && this.data !== null) {
      try {
        data = JSON.stringify(this.data);
      } catch (e) {
        data = JSON.stringify({ error: `data did not serialise: ${e}` });
      }
    }
    return { outcome, message: this.message, data };
  }
}

const U64_MAX = 2n ** 64n - 1n;

// A retry delay as the WIT's u64 milliseconds (a BigInt); anything unusable leaves it to the host.
function delay(ms) {
  let v;
  if (typeof ms === "bigint") v = ms;
  else if (typeof ms === "number" && Number.isFinite(ms)) v = BigInt(Math.round(ms));
  else return undefined;
  return v < 0n ? 0n : v > U64_MAX ? U64_MAX : v;
}

/** A Conveyor resource, as carried in an event's payload. */
export class Resource {
  constructor({ name, resource, spec = {}, id = "", pipeline = null, metadata = {} }) {
    if (typeof name !== "string" || typeof resource !== "string") {
      throw new TypeError("a resource needs a string `name` and `resource`");
    }
    this.name = name;
    /** The resource's type: the name of its resource definition. */
    this.resource = resource;
    this.spec = spec;
    this.id = id;
    this.pipeline = pipeline || null;
    /** String-to-string metadata: `version` and `driverresults.<driver>` entries. */
    this.metadata = metadata ?? {};
  }

  /** Parses an event payload (or any resource JSON text). Throws if it is not a resource. */
  static parse(payload) {
    const value = JSON.parse(payload);
    if (value === null || typeof value !== "object" || Array.isArray(value)) {
      throw new TypeError("a resource is a JSON object");
    }
    return new Resource(value);
  }

  /** The resource's version, from `metadata.version`. */
  get version() {
    return this.metadata.version ?? null;
  }

  /** The result an earlier pipeline step's driver left in its metadata, if any. */
  driverResult(driver) {
    const text = this.metadata[`driverresults.${driver}`];
    if (text === undefined) return null;
    try {
      return JSON.parse(text);
    } catch {
      return null;
    }
  }

  toJSON() {
    const value = { name: this.name, resource: this.resource, spec: this.spec };
    if (this.id) value.id = this.id;
    if (this.pipeline) value.pipeline = this.pipeline;
    if (Object.keys(this.metadata).length) value.metadata = this.metadata;
    return value;
  }
}

/**
 * Why an API client call failed. `kind` is one of `not-found`, `invalid`, `conflict`,
 * `denied`, `unavailable` (from the host) or `decode` (its answer was not what was expected).
 */
export class ClientError extends Error {
  constructor(kind, message) {
    super(`${kind}: ${message}`);
    this.name = "ClientError";
    this.kind = kind;
    this.detail = message;
  }

  /** Whether retrying the event later may help. */
  get isTransient() {
    return this.kind === "unavailable";
  }
}

// jco throws a WIT `result` error as an Error whose `payload` is the variant.
function call(fn, ...args) {
  try {
    return fn(...args);
  } catch (e) {
    const v = e?.payload;
    if (v && typeof v.tag === "string") throw new ClientError(v.tag, String(v.val ?? ""));
    throw e;
  }
}

function decode(text, parse = JSON.parse) {
  try {
    return parse(text);
  } catch (e) {
    throw new ClientError("decode", String(e?.message ?? e));
  }
}

/** The Conveyor API client: read and write resources through the host. Calls throw `ClientError`. */
export const client = {
  /** Reads the current version of a resource. */
  getResource(resourceType, name) {
    return decode(call(witClient.getResource, resourceType, name), Resource.parse);
  },

  /**
   * Creates a resource (a `Resource` or an object with `name`, `resource`, `spec`); drivers
   * listening to its type receive a `create` event. Returns `{ name, runId, version }`.
   */
  createResource(resource) {
    return call(witClient.createResource, JSON.stringify(resource));
  },

  /** Replaces a resource's state (its version is bumped and an `update` event sent). */
  updateResource(resource) {
    return decode(
      call(witClient.updateResource, resource.resource, resource.name, JSON.stringify(resource)),
      Resource.parse,
    );
  },

  /** Reads a resource definition: `name`, `description`, `version`, `schema`. */
  getResourceDefinition(name) {
    return decode(call(witClient.getResourceDefinition, name));
  },
};

// The stack goes where the Python SDK's traceback goes: the run's stderr. QuickJS (jco's
// `--backend qjs`) has no `console`, so there the line is logged with the label the host gives
// stderr lines.
function reportUncaught(e) {
  const header = `Uncaught ${e?.name ?? "exception"}: ${e?.message ?? e}`;
  const stack = String(e?.stack ?? "");
  // V8's stack starts with the error's own header; QuickJS's is only the frames.
  const frames = stack.startsWith(`${e?.name}:`) ? stack.slice(stack.indexOf("\n") + 1) : stack;
  const text = `${header}\n${frames}`.trimEnd();
  if (typeof console !== "undefined" && typeof console.error === "function") {
    console.error(text);
  } else {
    witLog([["stream", "stderr"]], text);
  }
}

/**
 * Turns a driver (`{ name, resources, events?, reconcile(payload, event, runId, logger) }`) into
 * the component's `info` and `reconcile` exports: `export const { info, reconcile } =
 * defineDriver({...})`. An exception escaping `reconcile` becomes a failed result naming it, with
 * the stack on the run's stderr (which the host records in the run's log).
 */
export function defineDriver(driver) {
  return {
    info() {
      return {
        name: driver.name,
        resources: [...driver.resources],
        events: [...(driver.events ?? [])],
      };
    },
    reconcile(ev) {
      const logger = new Logger(ev);
      try {
        const result = driver.reconcile(ev.payload, ev.name, ev.runId, logger);
        if (!(result instanceof DriverResult)) {
          throw new TypeError(`reconcile returned ${typeof result}, not a DriverResult`);
        }
        return result.toWit();
      } catch (e) {
        reportUncaught(e);
        return DriverResult.failure(`${e?.name ?? "Error"}: ${e?.message ?? e}`).toWit();
      }
    },
  };
}
