//! A driver for the host's end-to-end tests. It listens to resources of type `test` and does
//! what the resource's `spec.action` says, so one component covers well-behaved and hostile
//! behaviour:
//!
//! | action | behaviour |
//! |---|---|
//! | `ok` (default) | waits `spec.wait_ms` milliseconds (default 0), logs one line per `spec.lines` (default 1) and succeeds with `data` |
//! | `panic` | panics with `spec.message` |
//! | `loop` | spins forever |
//! | `sleep` | sleeps `spec.ms` milliseconds, then succeeds with `data.attempt` |
//! | `hold` | logs `start`, sleeps `spec.ms` milliseconds, logs `end` and succeeds: the log timestamps show when it ran |
//! | `memory` | allocates without bound |
//! | `stdout` | prints `spec.message` to stdout and stderr, then succeeds |
//! | `fail` | returns a permanent failure |
//! | `flaky` | asks for a retry until attempt `spec.succeed_on`, then succeeds |
//! | `client` | reads its own resource and the `test` definition through the API client |
//! | `flood` | logs lines without end |
//! | `read` | reads the file `spec.path`; succeeds with its text in `data.text` |
//! | `write` | writes `spec.content` to `spec.path`, reads it back, succeeds |
//! | `env` | succeeds with its whole environment in `data.env` |
//! | `secret` | prints, logs and returns the value of the variable `spec.name` |
//! | `http` | GETs `spec.url` through wasi:http; succeeds with `data.status` and `data.body` |
//! | `create` | creates a resource of type `spec.kind` with `spec.spec` through the API client; a refusal fails the run with the client's error |
//! | `create-loop` | creates resources of type `spec.kind` through the API client until one is refused; succeeds with `data.created` and `data.error` |
//! | `deep-create` | creates a resource of type `spec.kind` whose spec nests `spec.depth` objects (`{"child": …}`) through the API client |
//! | `deep-data` | succeeds with `data` nested `spec.depth` (default 200) arrays deep: more than the host's JSON reader takes, so the result is invalid |
//! | `secret-label` | logs a line whose label *name* is the value of the variable `spec.name` |
//! | `secret-long` | prints `spec.pad` bytes of `x` then the value of the variable `spec.name`, as one line |
//! | `secret-create` | creates a resource of type `spec.kind` whose spec holds the value of the variable `spec.name`, through the API client |
//! | `needs-v2` | logs which build runs it; fails on build `v1`, succeeds on any other (a driver "fixed" by the build marker's patch) |

use conveyor_driver::client;
use conveyor_driver::{Driver, DriverResult, Logger, Resource};
use serde_json::{Value, json};

/// Which build this is, returned in the data of `ok` and `sleep`: hot-reload tests make a
/// second version by patching `v1` to `v2` in the component's bytes, so a result says which
/// version ran it.
static BUILD: &str = "conveyor-test-build:v1";

fn build() -> &'static str {
    std::hint::black_box(BUILD).trim_start_matches("conveyor-test-build:")
}

struct TestDriver;

impl Driver for TestDriver {
    const NAME: &'static str = "test-driver";
    /// `test-reload-v1` is a marker: a test patches it in the component's bytes to make a
    /// second version that listens to other resources.
    const RESOURCES: &'static [&'static str] = &["test", "test-reload-v1"];

    fn reconcile(payload: &str, event: &str, run_id: &str, logger: &Logger) -> DriverResult {
        let resource = match Resource::<Value>::parse(payload) {
            Ok(r) => r,
            Err(e) => return DriverResult::failure(format!("bad payload: {e}")),
        };
        let spec = &resource.spec;
        let text = |key: &str| {
            spec.get(key)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let number =
            |key: &str, default: u64| spec.get(key).and_then(Value::as_u64).unwrap_or(default);
        match spec.get("action").and_then(Value::as_str).unwrap_or("ok") {
            "ok" => {
                std::thread::sleep(std::time::Duration::from_millis(number("wait_ms", 0)));
                for i in 0..number("lines", 1) {
                    logger.log([("line", (i + 1).to_string())], format!("line {}", i + 1));
                }
                DriverResult::success("ok").with_data(json!({
                    "event": event,
                    "run_id": run_id,
                    "attempt": logger.attempt(),
                    "version": resource.version(),
                    "build": build(),
                }))
            }
            "panic" => panic!("{}", text("message")),
            "loop" => {
                let mut x: u64 = 0;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            "sleep" => {
                std::thread::sleep(std::time::Duration::from_millis(number("ms", 100)));
                DriverResult::success("slept")
                    .with_data(json!({"attempt": logger.attempt(), "build": build()}))
            }
            "hold" => {
                logger.log([("phase", "start")], "start");
                std::thread::sleep(std::time::Duration::from_millis(number("ms", 100)));
                logger.log([("phase", "end")], "end");
                DriverResult::success("held")
            }
            "memory" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "stdout" => {
                println!("{}", text("message"));
                eprintln!("to stderr: {}", text("message"));
                DriverResult::success("printed")
            }
            "fail" => DriverResult::failure(text("message")),
            "flaky" => {
                if u64::from(logger.attempt()) < number("succeed_on", 3) {
                    DriverResult::retry(format!("not yet (attempt {})", logger.attempt()))
                } else {
                    DriverResult::success(format!("succeeded on attempt {}", logger.attempt()))
                }
            }
            "client" => {
                let me = client::get_resource::<Value>(&resource.resource, &resource.name);
                let def = client::get_resource_definition(&resource.resource);
                let missing = client::get_resource::<Value>("test", "does-not-exist");
                match (me, def) {
                    (Ok(me), Ok(def)) => DriverResult::success("read through the client")
                        .with_data(json!({
                            "id": me.id,
                            "definition": def.name,
                            "missing": missing.err().map(|e| e.to_string()),
                        })),
                    (Err(e), _) | (_, Err(e)) => {
                        DriverResult::failure(format!("client failed: {e}"))
                    }
                }
            }
            "flood" => {
                let mut i: u64 = 0;
                loop {
                    i += 1;
                    logger.info(format!("flood line {i}"));
                }
            }
            "read" => match std::fs::read_to_string(text("path")) {
                Ok(t) => DriverResult::success("read").with_data(json!({ "text": t })),
                Err(e) => DriverResult::failure(format!("cannot read {}: {e}", text("path"))),
            },
            "write" => {
                let path = text("path");
                let written = std::fs::write(&path, text("content"))
                    .and_then(|()| std::fs::read_to_string(&path));
                match written {
                    Ok(t) => DriverResult::success("written").with_data(json!({ "text": t })),
                    Err(e) => DriverResult::failure(format!("cannot write {path}: {e}")),
                }
            }
            "env" => {
                let env: serde_json::Map<String, Value> = std::env::vars()
                    .map(|(k, v)| (k, Value::String(v)))
                    .collect();
                DriverResult::success("environment").with_data(json!({ "env": env }))
            }
            "secret" => {
                let value = std::env::var(text("name")).unwrap_or_default();
                println!("the secret is {value}");
                logger.log([("secret", value.clone())], format!("secret: {value}"));
                DriverResult::success(format!("used {value}")).with_data(json!({ "secret": value }))
            }
            "http" => match http_get(&text("url")) {
                Ok((status, body)) => DriverResult::success(format!("HTTP {status}"))
                    .with_data(json!({ "status": status, "body": body })),
                Err(e) => DriverResult::failure(format!("GET {} failed: {e}", text("url"))),
            },
            "create" => {
                let spec = spec.get("spec").cloned().unwrap_or_else(|| json!({}));
                create(&text("kind"), &format!("{}-made", resource.name), spec)
            }
            "create-loop" => {
                // Bounded, so that a broken budget shows as a count rather than a hung run.
                for i in 0..100_000u64 {
                    let made = create(&text("kind"), &format!("{}-{i}", resource.name), json!({}));
                    if !made.success {
                        return DriverResult::success("refused").with_data(json!({
                            "created": i,
                            "error": made.message,
                        }));
                    }
                }
                DriverResult::success("never refused").with_data(json!({"created": 100_000}))
            }
            "deep-create" => {
                let mut nested = json!({});
                for _ in 0..number("depth", 100) {
                    nested = json!({ "child": nested });
                }
                create(&text("kind"), &format!("{}-deep", resource.name), nested)
            }
            "deep-data" => {
                let mut data = json!(0);
                for _ in 0..number("depth", 200) {
                    data = json!([data]);
                }
                DriverResult::success("deep").with_data(data)
            }
            "secret-label" => {
                let value = std::env::var(text("name")).unwrap_or_default();
                logger.log([(value, "label value")], "a label named after the secret");
                DriverResult::success("logged")
            }
            "secret-long" => {
                let value = std::env::var(text("name")).unwrap_or_default();
                let pad = "x".repeat(number("pad", 16 << 10) as usize);
                println!("{pad}{value}");
                DriverResult::success("printed")
            }
            "secret-create" => {
                let value = std::env::var(text("name")).unwrap_or_default();
                create(
                    &text("kind"),
                    &format!("{}-made", resource.name),
                    json!({ "token": value }),
                )
            }
            "needs-v2" => {
                logger.log([("build", build())], format!("running build {}", build()));
                if build() == "v1" {
                    DriverResult::failure("broken in build v1")
                } else {
                    DriverResult::success(format!("fixed in build {}", build()))
                }
            }
            other => DriverResult::failure(format!("unknown action {other:?}")),
        }
    }
}

/// Creates a resource through the API client: success with the new run's id, or a failure
/// carrying the client's error.
fn create(kind: &str, name: &str, spec: Value) -> DriverResult {
    let made = client::create_resource(&Resource {
        id: String::new(),
        name: name.to_string(),
        resource: kind.to_string(),
        pipeline: None,
        metadata: Default::default(),
        spec,
    });
    match made {
        Ok(c) => DriverResult::success("created").with_data(json!({ "run_id": c.run_id })),
        Err(e) => DriverResult::failure(format!("client failed: {e}")),
    }
}

/// A plain GET through `wasi:http/outgoing-handler`.
fn http_get(url: &str) -> Result<(u16, String), String> {
    use wasip2::http::outgoing_handler;
    use wasip2::http::types::{Fields, IncomingBody, OutgoingBody, OutgoingRequest, Scheme};
    use wasip2::io::streams::StreamError;

    let (scheme, rest) = url.split_once("://").ok_or("not a URL")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let request = OutgoingRequest::new(Fields::new());
    let scheme = if scheme == "https" {
        Scheme::Https
    } else {
        Scheme::Http
    };
    request
        .set_scheme(Some(&scheme))
        .map_err(|()| "bad scheme")?;
    request
        .set_authority(Some(authority))
        .map_err(|()| "bad authority")?;
    request
        .set_path_with_query(Some(path))
        .map_err(|()| "bad path")?;
    let body = request.body().map_err(|()| "no body")?;
    let response = outgoing_handler::handle(request, None).map_err(|e| format!("{e:?}"))?;
    OutgoingBody::finish(body, None).map_err(|e| format!("{e:?}"))?;
    response.subscribe().block();
    let response = response
        .get()
        .ok_or("no response")?
        .map_err(|()| "response taken twice")?
        .map_err(|e| format!("{e:?}"))?;
    let status = response.status();
    let incoming = response.consume().map_err(|()| "no body")?;
    let stream = incoming.stream().map_err(|()| "no body stream")?;
    let mut bytes = Vec::new();
    loop {
        match stream.blocking_read(64 << 10) {
            Ok(chunk) => bytes.extend(chunk),
            Err(StreamError::Closed) => break,
            Err(e) => return Err(format!("reading the body: {e:?}")),
        }
    }
    drop(stream);
    drop(IncomingBody::finish(incoming));
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}

conveyor_driver::export!(TestDriver);
