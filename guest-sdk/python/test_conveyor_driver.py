"""Unit tests of the pure parts of conveyor_driver (run outside a component, where the WIT
bindings are absent): `python -m unittest discover guest-sdk/python`. The parts that call the
host are covered end to end by tests/polyglot.rs."""

import json
import unittest

import conveyor_driver as cd


class ResourceTest(unittest.TestCase):
    def test_payloads_parse(self):
        payload = json.dumps(
            {
                "id": "u",
                "name": "app",
                "resource": "pipe",
                "metadata": {
                    "version": "2",
                    "driverresults.builder": json.dumps({"success": True, "data": {"k": "v"}}),
                },
                "spec": {"steps": 3},
            }
        )
        r = cd.Resource.parse(payload)
        self.assertEqual((r.name, r.resource, r.spec["steps"]), ("app", "pipe", 3))
        self.assertEqual(r.version, "2")
        self.assertEqual(r.driver_result("builder")["data"], {"k": "v"})
        self.assertIsNone(r.driver_result("other"))
        self.assertEqual(json.loads(r.to_json())["metadata"]["version"], "2")

    def test_bad_payloads_raise_value_error(self):
        for payload in ["[]", "{}", '{"name": "x"}', "not json"]:
            with self.assertRaises(ValueError, msg=payload):
                cd.Resource.parse(payload)


class DriverResultTest(unittest.TestCase):
    def test_constructors(self):
        ok = cd.DriverResult.success("done", data={"n": 1})
        self.assertTrue(ok.ok)
        self.assertEqual(ok.data, {"n": 1})
        self.assertFalse(cd.DriverResult.failure("no").transient)
        retry = cd.DriverResult.retry("later", after_ms=500)
        self.assertEqual((retry.ok, retry.transient, retry.after_ms), (False, True, 500))
        self.assertEqual(cd.DriverResult.failure("x").with_data([1]).data, [1])

    def test_messages_are_text_and_delays_fit_a_u64(self):
        self.assertEqual(cd.DriverResult.failure(ValueError("bad")).message, "bad")
        self.assertEqual(cd._delay(1500.7), 1500)
        self.assertEqual(cd._delay(-5), 0)
        self.assertEqual(cd._delay(10**30), 2**64 - 1)
        self.assertIsNone(cd._delay(float("inf")))
        self.assertIsNone(cd._delay(float("nan")))
        self.assertIsNone(cd._delay("soon"))

    def test_outside_a_component_the_bindings_are_named(self):
        with self.assertRaises(RuntimeError):
            cd.DriverResult.success("x")._into_wit()


class LabelsTest(unittest.TestCase):
    def test_dicts_and_pairs_become_text(self):
        self.assertEqual(cd._labels({"step": 1}), [("step", "1")])
        self.assertEqual(cd._labels([("a", True)]), [("a", "True")])
        self.assertEqual(cd._labels(None), [])


class ClientErrorTest(unittest.TestCase):
    def test_only_unavailable_is_transient(self):
        self.assertTrue(cd.ClientError("unavailable", "down").is_transient)
        self.assertFalse(cd.ClientError("not-found", "gone").is_transient)
        self.assertEqual(str(cd.ClientError("invalid", "bad")), "invalid: bad")


if __name__ == "__main__":
    unittest.main()
