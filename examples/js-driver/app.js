// The Conveyor CI sample driver in JavaScript: labelled log lines, a result with JSON data, and
// a round trip through the host's API client. Built into a component by `npm run build`.

import { ClientError, DriverResult, Resource, client, defineDriver } from "conveyor-driver";

export const { info, reconcile } = defineDriver({
  name: "js-driver",
  resources: ["js-task"],

  reconcile(payload, event, runId, logger) {
    const task = Resource.parse(payload);
    if (task.spec.fail !== undefined) {
      // Shows what an uncaught exception becomes: a failed result naming it, and the stack in
      // the run's log.
      throw new Error(String(task.spec.fail));
    }
    const steps = Number(task.spec.steps ?? 3);
    for (let i = 1; i <= steps; i++) {
      logger.log({ step: i, language: "javascript" }, `JS Driver Working... ${i}/${steps}`);
    }

    // Read back through the API client what the payload does not carry: the definition,
    // and the resource this one depends on, if any (a missing one is a permanent failure).
    let stored, definition;
    try {
      stored = client.getResource(task.resource, task.name);
      definition = client.getResourceDefinition(task.resource);
      if (task.spec.depends_on !== undefined) client.getResource(task.resource, task.spec.depends_on);
    } catch (e) {
      if (e instanceof ClientError && e.isTransient) {
        return DriverResult.retry(`the API is unavailable: ${e.message}`);
      }
      return DriverResult.failure(`could not read ${task.name} back: ${e.message}`);
    }

    logger.log({ step: "done", language: "javascript" }, `read ${stored.name} back`);
    return DriverResult.success("JS Driver Reconciled Successfully", {
      language: "javascript",
      event,
      steps,
      read_back: {
        version: stored.version,
        definition_description: definition.description ?? "",
      },
    });
  },
});
