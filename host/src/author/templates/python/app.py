"""The {{name}} driver: logs one line per step of its resource's spec, reads the resource's
definition back through the host's API client, and succeeds with JSON data."""

import conveyor_driver as cd


class Driver(cd.Driver):
    name = "{{name}}"
    resources = ["{{kind}}"]

    def reconcile(self, payload, event, run_id, logger):
        task = cd.Resource.parse(payload)
        steps = int(task.spec.get("steps", 1))
        for i in range(1, steps + 1):
            logger.log({"step": i}, f"step {i} of {steps}")
        try:
            definition = cd.client.get_resource_definition(task.resource)
        except cd.ClientError as e:
            if e.is_transient:
                return cd.DriverResult.retry(f"the API is unavailable: {e}")
            return cd.DriverResult.failure(f"cannot read the definition: {e}")
        return cd.DriverResult.success(
            f"reconciled {task.name}",
            data={"steps": steps, "definition": definition.get("description", "")},
        )


WitWorld = cd.export(Driver)
