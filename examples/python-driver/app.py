"""The Conveyor CI sample driver in Python: labelled log lines, a result with JSON data, and a
round trip through the host's API client. Built into a component by build.sh."""

import os

import conveyor_driver as cd


class PythonDriver(cd.Driver):
    name = "python-driver"
    resources = ["python-task"]

    def reconcile(self, payload, event, run_id, logger):
        task = cd.Resource.parse(payload)
        if "fail" in task.spec:
            # Shows what an uncaught exception becomes: a failed result naming it, and the
            # traceback in the run's log.
            raise RuntimeError(task.spec["fail"])
        steps = int(task.spec.get("steps", 3))
        for i in range(1, steps + 1):
            logger.log({"step": i, "language": "python"}, f"Python Driver Working... {i}/{steps}")

        # Read back through the API client what the payload does not carry: the definition,
        # and the resource this one depends on, if any (a missing one is a permanent failure).
        try:
            stored = cd.client.get_resource(task.resource, task.name)
            definition = cd.client.get_resource_definition(task.resource)
            if "depends_on" in task.spec:
                cd.client.get_resource(task.resource, task.spec["depends_on"])
        except cd.ClientError as e:
            if e.is_transient:
                return cd.DriverResult.retry(f"the API is unavailable: {e}")
            return cd.DriverResult.failure(f"could not read {task.name} back: {e}")

        # GREETING is granted in the host's config ([drivers.python-driver] env); without the
        # grant the variable is simply not there.
        greeting = os.environ.get("GREETING", "(no GREETING granted)")
        logger.log({"step": "done", "language": "python"}, f"{greeting} from {stored.name}")
        return cd.DriverResult.success(
            "Python Driver Reconciled Successfully",
            data={
                "language": "python",
                "event": event,
                "steps": steps,
                "greeting": greeting,
                "read_back": {
                    "version": stored.version,
                    "definition_description": definition.get("description", ""),
                },
            },
        )


WitWorld = cd.export(PythonDriver)
