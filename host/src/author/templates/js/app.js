// The {{name}} driver: logs one line per step of its resource's spec, reads the resource's
// definition back through the host's API client, and succeeds with JSON data.

import { ClientError, DriverResult, Resource, client, defineDriver } from "./conveyor-driver.js";

export const { info, reconcile } = defineDriver({
  name: "{{name}}",
  resources: ["{{kind}}"],

  reconcile(payload, event, runId, logger) {
    const task = Resource.parse(payload);
    const steps = Number(task.spec.steps ?? 1);
    for (let i = 1; i <= steps; i++) {
      logger.log({ step: i }, `step ${i} of ${steps}`);
    }
    let definition;
    try {
      definition = client.getResourceDefinition(task.resource);
    } catch (e) {
      if (e instanceof ClientError && e.isTransient) {
        return DriverResult.retry(`the API is unavailable: ${e.message}`);
      }
      return DriverResult.failure(`cannot read the definition: ${e.message}`);
    }
    return DriverResult.success(`reconciled ${task.name}`, {
      steps,
      definition: definition.description ?? "",
    });
  },
});
