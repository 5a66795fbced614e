// Lets the SDK's unit tests import it under Node: the `conveyor:driver/...` imports exist only
// inside a component, so here they resolve to small stand-ins that record what the SDK passes
// to the host (globalThis.witCalls) and answer client calls from globalThis.witAnswers.
import { register } from "node:module";

const stubs = {
  "conveyor:driver/log@0.1.0": `
    export function log(labels, message) { globalThis.witCalls.push(["log", labels, message]); }`,
  "conveyor:driver/client@0.1.0": `
    function answer(name, args) {
      globalThis.witCalls.push([name, ...args]);
      const a = globalThis.witAnswers[name];
      if (a && a.error) { const e = new Error("client error"); e.payload = a.error; throw e; }
      return a;
    }
    export function getResource(...args) { return answer("getResource", args); }
    export function createResource(...args) { return answer("createResource", args); }
    export function updateResource(...args) { return answer("updateResource", args); }
    export function getResourceDefinition(...args) { return answer("getResourceDefinition", args); }`,
};

globalThis.witCalls = [];
globalThis.witAnswers = {};

const hooks = `
  const stubs = ${JSON.stringify(stubs)};
  export async function resolve(specifier, context, next) {
    if (specifier in stubs) {
      return { url: "data:text/javascript," + encodeURIComponent(stubs[specifier]), shortCircuit: true };
    }
    return next(specifier, context);
  }`;
register("data:text/javascript," + encodeURIComponent(hooks));
