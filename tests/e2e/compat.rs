//! Compatibility with upstream Conveyor's HTTP behaviour (`conveyor-protocol.md` §2, §3 and
//! the conformance cases of §8): upstream's published Python client driving the embedded
//! API; trailing slashes and `HEAD` on every route; CORS; bodies as Go decodes them (any
//! JSON content type, `null` as the empty value, field names in any case), over HTTP and
//! NATS; the broadcast route; the run id in a `PUT` body; upstream's #93 stream path;
//! validation errors in upstream's words; and an idle host staying idle.

use std::time::Duration;

use serde_json::{Value, json};
use support::http::run_id_of;
use support::nats::{Conveyor, NatsServer};
use support::{Host, Sse};
use tokio::sync::OnceCell;

use crate::{Fixture, spawn, workdir};

/// Upstream's conformance fixture `RD`: the `pipe` definition.
fn pipe_schema() -> Value {
    json!({"type":"object","properties":{"image":{"type":"string"},
        "steps":{"type":"array","items":{"type":"object","properties":{"name":{"type":"string"},
        "command":{"type":"string"}},"required":["name","command"]}}},"required":["steps"]})
}

/// The module's host: the test driver, any origin allowed (as upstream), with definitions
/// `test` (the test driver's) and `pipe` (upstream's fixture, no driver).
async fn host() -> &'static Host {
    static HOST: OnceCell<Fixture> = OnceCell::const_new();
    let fixture = HOST
        .get_or_init(|| async {
            let fixture = Fixture::start(&["test-driver"], "cors_origins = [\"*\"]\n");
            fixture.host.define("test", json!({"type": "object"})).await;
            fixture.host.define("pipe", pipe_schema()).await;
            fixture
        })
        .await;
    &fixture.host
}

/// The `.tools` virtualenv's Python (tests/run.sh installs conveyor-py and
/// openapi-spec-validator there, see examples/tools.sh).
fn python() -> std::path::PathBuf {
    let python = support::workspace().join(".tools/venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `. examples/tools.sh && tools_compat` from the repository root",
        python.display()
    );
    python
}

/// Runs a Python script with the tools' interpreter; panics with its output unless it exits 0.
fn run_python(script: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(python())
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "python failed: {}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn port_of(host: &Host) -> String {
    host.url.rsplit(':').next().expect("a port").to_string()
}

// ---- upstream's Python client ----------------------------------------------------------

/// Every method of `conveyor.client.Client` (conveyor-py 0.0.3, from PyPI) works against
/// the embedded API; each raises on a 4xx or 5xx.
#[tokio::test]
async fn upstreams_python_client_works_unchanged() {
    let host = host().await;
    let script = r#"
import json, sys, inspect
from conveyor.client import Client
c = Client(api_host="127.0.0.1", api_port=int(sys.argv[1]))
assert c.get_api_url() == "http://127.0.0.1:" + sys.argv[1]
methods = sorted(n for n, _ in inspect.getmembers(Client, inspect.isfunction) if not n.startswith("_"))
schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
out = {"methods": methods}
r = c.create_resource_definition({"name": "py-kind", "version": "1", "schema": schema})
out["create_resource_definition"] = [r.status_code, r.json()]
r = c.create_or_update_resource_definition({"name": "py-kind", "version": "2", "schema": schema})
out["create_or_update_resource_definition"] = [r.status_code, r.json()]
r = c.create_resource({"name": "py-res", "resource": "py-kind", "spec": {"n": 1}})
out["create_resource"] = [r.status_code, r.json()]
print(json.dumps(out))
"#;
    let port = port_of(host);
    let out = tokio::task::spawn_blocking(move || run_python(script, &[&port]))
        .await
        .expect("the python thread");
    let out: Value = serde_json::from_str(out.trim()).expect("the script's JSON");
    assert_eq!(
        out["methods"],
        json!([
            "create_or_update_resource_definition",
            "create_resource",
            "create_resource_definition",
            "get_api_url"
        ]),
        "conveyor-py's Client has methods this test does not call"
    );
    assert_eq!(out["create_resource_definition"][0], 201, "{out}");
    assert_eq!(out["create_or_update_resource_definition"][0], 201, "{out}");
    assert_eq!(
        out["create_or_update_resource_definition"][1]["version"],
        "2"
    );
    assert_eq!(out["create_resource"][0], 201, "{out}");
    assert_eq!(
        out["create_resource"][1]["message"],
        "Resource created successfully"
    );
    let (status, def) = host.get("/resource-definitions/py-kind").await;
    assert_eq!((status, &def["version"]), (200, &json!("2")));
}

// ---- routing ---------------------------------------------------------------------------

/// Every route of the embedded API, with a request that reaches its handler.
fn every_route() -> Vec<(&'static str, &'static str, Option<Value>)> {
    let def = json!({"name": "slash-kind", "schema": {"type": "object"}});
    vec![
        ("GET", "/", None),
        ("GET", "/health", None),
        ("GET", "/metrics", None),
        ("GET", "/drivers", None),
        ("POST", "/resource-definitions", Some(def.clone())),
        ("POST", "/resource-definitions/apply", Some(def)),
        ("GET", "/resource-definitions", None),
        ("GET", "/resource-definitions/test", None),
        (
            "PUT",
            "/resource-definitions/nope",
            Some(json!({"schema": {}})),
        ),
        ("DELETE", "/resource-definitions/nope", None),
        ("POST", "/resources", Some(json!({"name": "x"}))),
        ("GET", "/resources", None),
        ("GET", "/resources/test", None),
        ("GET", "/resources/test/nope", None),
        ("PUT", "/resources/test/nope", Some(json!({"spec": {}}))),
        ("DELETE", "/resources/test/nope", None),
        ("GET", "/resources/test/nope/1", None),
        ("GET", "/logs", None),
        (
            "POST",
            "/logs",
            Some(json!({"runid": "slash", "message": "m"})),
        ),
        ("GET", "/pipelines", None),
        (
            "POST",
            "/pipelines",
            Some(json!({"name": "p", "resource": "nope"})),
        ),
        ("GET", "/pipelines/nope", None),
        ("PUT", "/pipelines/nope", Some(json!({"resource": "test"}))),
        ("DELETE", "/pipelines/nope", None),
        ("GET", "/runs", None),
        ("GET", "/runs/nope", None),
        ("POST", "/runs/nope/cancel", None),
        ("POST", "/runs/nope/replay", None),
        ("POST", "/runs/nope/retry", None),
        ("POST", "/drivers/nope/drain", None),
        (
            "POST",
            "/drivers/broadcast-message",
            Some(json!({"event": "ping", "payload": {}})),
        ),
        ("POST", "/auth/tickets", None),
        ("GET", "/openapi.json", None),
    ]
}

async fn call(host: &Host, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a method");
    let mut request = reqwest::Client::new().request(method, host.at(path));
    if let Some(body) = body {
        request = request.json(body);
    }
    support::http::send(request).await
}

/// `/x/` is `/x` on every route, as upstream's router (Fiber, not strict) has it: the same
/// status, and never the 404 of an unknown route.
#[tokio::test]
async fn every_route_takes_a_trailing_slash() {
    let host = host().await;
    for (method, path, body) in every_route() {
        let (plain, plain_body) = call(host, method, path, body.as_ref()).await;
        let slashed = if path == "/" {
            "//".to_string()
        } else {
            format!("{path}/")
        };
        let (status, answer) = call(host, method, &slashed, body.as_ref()).await;
        let unknown = answer["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("Cannot "));
        assert!(!unknown, "{method} {slashed}: {status} {answer}");
        // A create repeated is a conflict; anything else answers the same.
        if !(plain == 201 && status == 409) {
            assert_eq!(
                status, plain,
                "{method} {slashed}: {answer}; without the slash: {plain_body}"
            );
        }
    }
}

/// Every `GET` route answers `HEAD`: the same status and headers, no body.
#[tokio::test]
async fn every_get_answers_head() {
    let host = host().await;
    for (method, path, _) in every_route() {
        if method != "GET" {
            continue;
        }
        let get = reqwest::get(host.at(path)).await.expect("GET");
        let head = reqwest::Client::new()
            .head(host.at(path))
            .send()
            .await
            .expect("HEAD");
        assert_eq!(head.status(), get.status(), "HEAD {path}");
        assert_eq!(
            head.headers().get("content-type"),
            get.headers().get("content-type"),
            "HEAD {path}"
        );
        assert!(head.bytes().await.expect("HEAD body").is_empty(), "{path}");
    }
}

/// Upstream's #93 path, `/drivers/streams/logs/{driver}/{runid}`, is the driver's stream.
#[tokio::test]
async fn the_93_path_streams_a_drivers_log() {
    let host = host().await;
    let run = host
        .create("test", "alias-run", json!({"action": "ok", "lines": 3}))
        .await;
    host.result(&run).await;
    let mut alias = Sse::get(&host.at(&format!("/drivers/streams/logs/test-driver/{run}"))).await;
    let (via_alias, end) = alias.until_end().await;
    let mut original = Sse::get(&host.at(&format!("/logs/streams/test-driver/{run}"))).await;
    let (via_original, _) = original.until_end().await;
    assert_eq!(via_alias.len(), 3, "{via_alias:?}");
    assert_eq!(via_alias, via_original);
    assert_eq!(end["status"], "succeeded");
}

// ---- CORS ------------------------------------------------------------------------------

/// A preflight is answered with 204 and upstream's methods before authentication, and
/// answers carry `Access-Control-Allow-Origin: *`.
#[tokio::test]
async fn cors_preflight_is_answered_before_authentication() {
    let dir = workdir(&[]);
    std::fs::write(dir.path().join("token"), "cors-token-0123456789").expect("write the token");
    let host = Host::start(
        dir.path(),
        "[[api.auth.tokens]]\nname = \"t\"\nrole = \"admin\"\nfile = \"token\"\n",
    );
    let preflight = reqwest::Client::new()
        .request(reqwest::Method::OPTIONS, host.at("/resources"))
        .header("Origin", "https://dashboard.example")
        .header("Access-Control-Request-Method", "POST")
        .header(
            "Access-Control-Request-Headers",
            "authorization,content-type",
        )
        .send()
        .await
        .expect("OPTIONS");
    assert_eq!(preflight.status(), 204);
    let header = |name: &str| {
        preflight
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(header("access-control-allow-origin"), "*");
    let methods = header("access-control-allow-methods");
    for m in ["GET", "POST", "HEAD", "PUT", "DELETE", "PATCH"] {
        assert!(methods.contains(m), "{methods}");
    }
    assert_eq!(
        header("access-control-allow-headers"),
        "authorization,content-type"
    );
    // A real request still needs its token, and its answer carries the CORS headers.
    let refused = reqwest::Client::new()
        .get(host.at("/runs"))
        .header("Origin", "https://dashboard.example")
        .send()
        .await
        .expect("GET");
    assert_eq!(refused.status(), 401);
    assert_eq!(refused.headers()["access-control-allow-origin"], "*");
    let ok = reqwest::Client::new()
        .get(host.at("/runs"))
        .header("Origin", "https://dashboard.example")
        .bearer_auth("cors-token-0123456789")
        .send()
        .await
        .expect("GET");
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.headers()["access-control-allow-origin"], "*");
}

/// `api.cors_origins` restricts the origins; an open API allows none unless it lists them.
#[tokio::test]
async fn cors_origins_restrict_who_may_call() {
    let origin_of = |response: &reqwest::Response| {
        response
            .headers()
            .get("access-control-allow-origin")
            .map(|v| v.to_str().unwrap_or_default().to_string())
    };
    let get = |host: &Host, origin: &str| {
        reqwest::Client::new()
            .get(host.at("/health"))
            .header("Origin", origin)
            .send()
    };
    let dir = workdir(&[]);
    let listed = Host::start(dir.path(), "cors_origins = [\"https://ci.example.com\"]\n");
    let allowed = get(&listed, "https://ci.example.com").await.expect("GET");
    assert_eq!(
        origin_of(&allowed).as_deref(),
        Some("https://ci.example.com")
    );
    let other = get(&listed, "https://evil.example").await.expect("GET");
    assert_eq!(origin_of(&other), None);
    let dir = workdir(&[]);
    let open = Host::start(dir.path(), "");
    let answer = get(&open, "https://evil.example").await.expect("GET");
    assert_eq!(origin_of(&answer), None);
}

/// A bad `api.cors_origins` stops the host with a message naming the key.
#[test]
fn a_bad_cors_origin_is_refused_at_start() {
    let dir = workdir(&[]);
    let config = dir.path().join("host.toml");
    std::fs::write(
        &config,
        "drivers_dir = \"drivers\"\ndata_dir = \"data\"\n[api]\ncors_origins = [\"https://ci.example.com/\"]\n",
    )
    .expect("write the config");
    let (code, _, stderr) =
        crate::run_cli(&["run", "--config", config.to_str().expect("a UTF-8 path")]);
    assert_ne!(code, 0);
    assert!(
        stderr.contains("api.cors_origins") && stderr.contains("no trailing '/'"),
        "{stderr}"
    );
}

// ---- bodies ----------------------------------------------------------------------------

async fn post_with_type(host: &Host, path: &str, content_type: &str, body: &Value) -> (u16, Value) {
    support::http::send(
        reqwest::Client::new()
            .post(host.at(path))
            .header("content-type", content_type)
            .body(body.to_string()),
    )
    .await
}

/// Any content type ending in `json` is JSON (`text/json`, `application/vnd.x+json`), as
/// upstream's framework takes it; `text/plain` is not, even with a parameter ending in json.
#[tokio::test]
async fn any_json_content_type_is_json() {
    let host = host().await;
    for (i, content_type) in ["text/json", "application/vnd.conveyor+json; charset=utf-8"]
        .iter()
        .enumerate()
    {
        let body = json!({"name": format!("ct-{i}"), "resource": "test", "spec": {}});
        let (status, answer) = post_with_type(host, "/resources", content_type, &body).await;
        assert_eq!(status, 201, "{content_type}: {answer}");
    }
    let body = json!({"name": "ct-plain", "resource": "test", "spec": {}});
    let (status, answer) = post_with_type(host, "/resources", "text/plain; x=json", &body).await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("Invalid request payload")),
        "{answer}"
    );
}

/// `null` for a declared field is its empty value, and field names match in any case (the
/// exact name winning), over HTTP.
#[tokio::test]
async fn bodies_decode_as_gos_decoder_over_http() {
    let host = host().await;
    let (status, answer) = host
        .post(
            "/resources",
            &json!({"Name": "folded", "name": "go-http", "RESOURCE": "test", "pipeline": null,
                    "metadata": null, "Spec": {"action": "ok"}}),
        )
        .await;
    assert_eq!(status, 201, "{answer}");
    assert_eq!(answer["name"], "go-http");
    let result = host.result(answer["runid"].as_str().expect("runid")).await;
    assert_eq!(result["success"], true, "{result}");
    let (status, pipeline) = host
        .post(
            "/pipelines",
            &json!({"NAME": "go-pipe", "Resource": "test", "steps": null, "metadata": null}),
        )
        .await;
    assert_eq!(status, 201, "{pipeline}");
    assert_eq!(pipeline["name"], "go-pipe");
    assert_eq!(pipeline["steps"], json!([]));
}

/// The same over NATS: a DriverMessage with its fields in other cases and nulls reaches the
/// driver, which reads the resource as the host did.
#[tokio::test]
async fn messages_decode_as_gos_decoder_over_nats() {
    let dir = workdir(&["test-driver"]);
    let server = NatsServer::start(dir.path());
    let conveyor = Conveyor::connect(&server.url).await;
    let host = Host::start(
        dir.path(),
        &format!(
            "[events]\nsource = \"nats\"\nurl = \"{}\"\nack_wait = \"2s\"\n",
            server.url
        ),
    );
    let payload = json!({"ID": "u1", "Name": "go-nats", "Resource": "test", "pipeline": null,
                         "metadata": null, "SPEC": {"action": "ok"}});
    let message = json!({"Event": "create", "PAYLOAD": payload.to_string(), "ID": null,
                         "Run_Id": "run-go-nats"});
    conveyor.wait_for_consumer("test-driver").await;
    conveyor
        .publish_raw("resources.test", message.to_string().into_bytes())
        .await;
    let results = conveyor.results(1, Duration::from_secs(60)).await;
    assert_eq!(results.len(), 1, "host log:\n{}", host.log());
    let result = &results[0];
    assert_eq!(result["run_id"], "run-go-nats", "{result}");
    assert_eq!(result["resource"]["name"], "go-nats", "{result}");
    assert_eq!(result["driverresult"]["success"], true, "{result}");
}

// ---- OpenAPI document and Swagger UI ----------------------------------------------------

/// The host's `/openapi.json`.
async fn openapi_document(host: &Host) -> Value {
    let (status, doc) = call(host, "GET", "/openapi.json", None).await;
    assert_eq!(status, 200, "{doc}");
    doc
}

/// The documented `(method, path template)` pairs, methods upper-case.
fn documented(doc: &Value) -> std::collections::BTreeSet<(String, String)> {
    let methods = [
        "get", "put", "post", "delete", "options", "head", "patch", "trace",
    ];
    doc["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, item)| {
            methods
                .iter()
                .filter(|m| item.get(**m).is_some())
                .map(|m| (m.to_uppercase(), path.clone()))
        })
        .collect()
}

/// A template's path with a placeholder for each `{param}`.
fn placeholder_path(template: &str) -> String {
    template
        .split('/')
        .map(|seg| {
            if seg.starts_with('{') {
                "placeholder"
            } else {
                seg
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Whether `path` (concrete) is an instance of `template`.
fn matches_template(template: &str, path: &str) -> bool {
    let (t, p): (Vec<_>, Vec<_>) = (template.split('/').collect(), path.split('/').collect());
    t.len() == p.len() && t.iter().zip(&p).all(|(t, p)| t.starts_with('{') || t == p)
}

/// Whether the router has no such route: a 405, or the fallback's 404 (`Cannot ...`); a 404
/// from a handler (an unknown resource) is a route. Reads the body of a 404 only, so a
/// stream's 200 is not waited on.
async fn unrouted(host: &Host, method: &str, path: &str) -> (bool, u16) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a method");
    let response = reqwest::Client::new()
        .request(method, host.at(path))
        .send()
        .await
        .expect("send");
    let status = response.status().as_u16();
    let fallback = status == 404
        && response
            .json::<Value>()
            .await
            .ok()
            .and_then(|v| v["error"].as_str().map(|e| e.starts_with("Cannot ")))
            .unwrap_or(false);
    (status == 405 || fallback, status)
}

/// `/openapi.json` is a valid OpenAPI 3.1 document (openapi-spec-validator, from PyPI), with
/// the bearer scheme of `[api.auth]` and the `{"error": ...}` body.
#[tokio::test]
async fn the_openapi_document_validates_as_3_1() {
    let doc = openapi_document(host().await).await;
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")),
        "{}",
        doc["openapi"]
    );
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    assert_eq!(
        doc["components"]["schemas"]["ErrorBody"]["properties"]["error"]["type"],
        "string"
    );
    let file = tempfile::NamedTempFile::new().expect("a temporary file");
    std::fs::write(file.path(), doc.to_string()).expect("write the document");
    let out = run_python(
        "import json, sys\n\
         from openapi_spec_validator import validate, OpenAPIV31SpecValidator\n\
         validate(json.load(open(sys.argv[1])), cls=OpenAPIV31SpecValidator)\n\
         print('valid')",
        &[file.path().to_str().expect("a UTF-8 path")],
    );
    assert_eq!(out.trim(), "valid");
}

/// The document lists exactly the routes the router serves: every documented method and
/// path reaches a handler, every other method on those paths is refused as unrouted (405),
/// paths it does not list are the 404 of an unknown route, and every route the other tests
/// of this module call is documented.
#[tokio::test]
async fn the_openapi_document_lists_every_route_served() {
    let host = host().await;
    let doc = documented(&openapi_document(host).await);
    for (method, template) in &doc {
        let path = placeholder_path(template);
        let (none, status) = unrouted(host, method, &path).await;
        assert!(
            !none,
            "documented {method} {template} is not served: {status}"
        );
        for other in ["GET", "POST", "PUT", "DELETE", "PATCH"] {
            if other == method || doc.contains(&(other.to_string(), template.clone())) {
                continue;
            }
            let (none, status) = unrouted(host, other, &path).await;
            assert!(none, "undocumented {other} {template} is served: {status}");
        }
    }
    for (method, path) in [
        ("GET", "/nope"),
        ("GET", "/resources/a/b/c/d"),
        ("POST", "/runs/r/restart"),
        ("GET", "/logs/streams/d"),
        ("GET", "/drivers/d"),
    ] {
        assert!(
            !doc.iter()
                .any(|(m, t)| m == method && matches_template(t, path)),
            "{method} {path} is documented"
        );
        let (none, status) = unrouted(host, method, path).await;
        assert!(none, "undocumented {method} {path} is served: {status}");
    }
    for (method, path, _) in every_route() {
        assert!(
            doc.iter()
                .any(|(m, t)| m == method && matches_template(t, path)),
            "{method} {path} is served but not documented"
        );
    }
    for (method, path) in [
        ("GET", "/logs/streams/{driver}/{runid}"),
        ("GET", "/logs/pipeline/{runid}"),
        ("GET", "/drivers/streams/logs/{driver}/{runid}"),
        ("GET", "/swagger/"),
    ] {
        assert!(
            doc.contains(&(method.to_string(), path.to_string())),
            "{method} {path} is not documented"
        );
    }
}

/// In NATS mode the host serves only the routes both modes share, and its document lists
/// just those: each answers, and the embedded API's paths are neither listed nor served.
#[tokio::test]
async fn nats_modes_document_lists_what_it_serves() {
    let dir = workdir(&[]);
    let server = NatsServer::start(dir.path());
    let host = Host::start(
        dir.path(),
        &format!("[events]\nsource = \"nats\"\nurl = \"{}\"\n", server.url),
    );
    let doc = documented(&openapi_document(&host).await);
    let paths: std::collections::BTreeSet<&str> = doc.iter().map(|(_, p)| p.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/",
            "/auth/tickets",
            "/drivers",
            "/health",
            "/metrics",
            "/openapi.json",
            "/swagger/"
        ]
        .into_iter()
        .collect(),
    );
    for (method, template) in &doc {
        let (none, status) = unrouted(&host, method, template).await;
        assert!(
            !none,
            "documented {method} {template} is not served: {status}"
        );
    }
    for (method, path) in [("GET", "/runs"), ("POST", "/resources"), ("GET", "/logs")] {
        let (none, status) = unrouted(&host, method, path).await;
        assert!(none, "{method} {path} is served in NATS mode: {status}");
    }
}

/// `/swagger/` serves Swagger UI from files compiled into the host, reading `/openapi.json`;
/// `/swagger` redirects to it (once: the trailing-slash trimming does not apply there).
#[tokio::test]
async fn swagger_ui_serves_its_page_and_assets() {
    let host = host().await;
    let content_type = |r: &reqwest::Response| {
        r.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let page = reqwest::get(host.at("/swagger"))
        .await
        .expect("GET /swagger");
    assert_eq!(page.status(), 200);
    assert_eq!(page.url().path(), "/swagger/");
    assert!(
        content_type(&page).starts_with("text/html"),
        "{}",
        content_type(&page)
    );
    let html = page.text().await.expect("the page");
    for asset in [
        "swagger-ui.css",
        "swagger-ui-bundle.js",
        "swagger-initializer.js",
    ] {
        assert!(html.contains(asset), "the page does not load {asset}");
    }
    for (asset, wanted) in [
        ("index.html", "text/html"),
        ("swagger-ui.css", "text/css"),
        ("swagger-ui-bundle.js", "javascript"),
        ("swagger-ui-standalone-preset.js", "javascript"),
        ("swagger-initializer.js", "javascript"),
    ] {
        let response = reqwest::get(host.at(&format!("/swagger/{asset}")))
            .await
            .expect("GET an asset");
        assert_eq!(response.status(), 200, "{asset}");
        let kind = content_type(&response);
        assert!(kind.contains(wanted), "{asset}: {kind}");
        let body = response.text().await.expect("the asset");
        assert!(!body.is_empty(), "{asset}");
        if asset == "swagger-initializer.js" {
            assert!(body.contains("/openapi.json"), "{body}");
        }
    }
}

/// With `[api.auth]` tokens, the document and the page need a credential with the `read`
/// role, as every `GET` does.
#[tokio::test]
async fn the_document_and_the_page_need_the_read_role() {
    let dir = workdir(&[]);
    std::fs::write(dir.path().join("token"), "openapi-token-0123456789").expect("a token");
    let host = Host::start(
        dir.path(),
        "[[api.auth.tokens]]\nname = \"r\"\nrole = \"read\"\nfile = \"token\"\n",
    );
    for path in [
        "/openapi.json",
        "/openapi.json/",
        "/swagger/",
        "/swagger/swagger-ui.css",
    ] {
        let refused = reqwest::get(host.at(path)).await.expect("GET");
        assert_eq!(refused.status(), 401, "{path}");
        let ok = reqwest::Client::new()
            .get(host.at(path))
            .bearer_auth("openapi-token-0123456789")
            .send()
            .await
            .expect("GET");
        assert_eq!(ok.status(), 200, "{path}");
    }
}

// ---- broadcast, PUT, validation ----------------------------------------------------------

/// `POST /drivers/broadcast-message` delivers the message to every driver that wants its
/// event, as a run with results; a body that is not a DriverMessage is a 400.
#[tokio::test]
async fn a_broadcast_reaches_every_driver_that_wants_it() {
    let host = host().await;
    let payload = json!({"name": "bc", "resource": "test", "spec": {"action": "ok"}});
    let response = reqwest::Client::new()
        .post(host.at("/drivers/broadcast-message"))
        .json(&json!({"event": "ping", "payload": payload.to_string(), "run_id": "r"}))
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), 200);
    let run = run_id_of(&response);
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(body, json!({"message": "message published"}));
    let result = host.result(&run).await;
    assert_eq!(result["driver"], "test-driver", "{result}");
    assert_eq!(result["event"], "ping", "{result}");
    assert_eq!(result["success"], true, "{result}");
    // Upstream's H28: an object payload is not a DriverMessage.
    let (status, answer) = host
        .post(
            "/drivers/broadcast-message",
            &json!({"event": "create", "payload": {}}),
        )
        .await;
    assert_eq!(status, 400);
    assert!(
        answer["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("could not parse request body")),
        "{answer}"
    );
}

/// `PUT /resources/{type}/{name}` names its run in the body (`runid`) and the header.
#[tokio::test]
async fn put_names_its_run_in_the_body() {
    let host = host().await;
    host.create("test", "put-run", json!({"action": "ok"}))
        .await;
    let response = reqwest::Client::new()
        .put(host.at("/resources/test/put-run"))
        .json(&json!({"spec": {"action": "ok", "lines": 2}}))
        .send()
        .await
        .expect("PUT");
    assert_eq!(response.status(), 200);
    let header = run_id_of(&response);
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(body["runid"], header.as_str(), "{body}");
    assert_eq!(body["name"], "put-run");
    assert_eq!(body["metadata"]["version"], "2");
}

/// Upstream's H11 and H12: validation errors start with upstream's prefix and name the
/// failing instance path and keyword.
#[tokio::test]
async fn validation_errors_read_as_upstreams() {
    let host = host().await;
    let (status, answer) = host
        .post(
            "/resources",
            &json!({"name": "x", "resource": "pipe", "spec": {"image": "a"}}),
        )
        .await;
    assert_eq!(status, 400);
    let error = answer["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with(
            "Resource validation failed: validation failed: jsonschema: '' does not validate with "
        ),
        "{error}"
    );
    assert!(
        error.ends_with("#/required: missing properties: 'steps'"),
        "{error}"
    );
    let (status, answer) = host
        .post(
            "/resources",
            &json!({"name": "y", "resource": "pipe", "spec": {"image": 5, "steps": []}}),
        )
        .await;
    assert_eq!(status, 400);
    let error = answer["error"].as_str().unwrap_or_default();
    assert!(error.contains("'/image'"), "{error}");
    assert!(
        error.ends_with("#/properties/image/type: expected string, but got number"),
        "{error}"
    );
}

// ---- an idle host ------------------------------------------------------------------------

/// The CPU time (user and system, in clock ticks) of a process, from `/proc/<pid>/stat`.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/pid/stat");
    // The command name (field 2) may hold spaces; the fields after its ')' are plain.
    let after = stat.rsplit_once(')').expect("a stat line").1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15; `after` starts at field 3.
    let utime: u64 = fields[11].parse().expect("utime");
    let stime: u64 = fields[12].parse().expect("stime");
    utime + stime
}

/// The kernel's clock ticks per second (`getconf CLK_TCK`; 100 on Linux if that fails).
fn clock_ticks_per_second() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100)
}

/// A host with three drivers loaded and nothing to do writes no log line and uses under
/// 0.5 % of a CPU over 20 s (its CPU time, not wall time: 10 ms of it at most, where a busy
/// loop or a tight poll would cost seconds).
#[test]
fn an_idle_host_stays_idle() {
    let dir = workdir(&["sample-driver", "test-driver", "noop-driver"]);
    let host = spawn(dir.path(), "");
    let pid = host.pid().expect("a spawned host has a pid");
    // Let start-up work (the warnings about loaded drivers, the first scrape) finish.
    std::thread::sleep(Duration::from_secs(3));
    let log_before = host.log();
    let ticks_before = cpu_ticks(pid);
    let window = Duration::from_secs(20);
    std::thread::sleep(window);
    let ticks = cpu_ticks(pid) - ticks_before;
    let log_after = host.log();
    let per_second = clock_ticks_per_second();
    let cpu = Duration::from_millis(ticks * 1000 / per_second);
    let share = cpu.as_secs_f64() / window.as_secs_f64();
    assert!(
        share < 0.005,
        "the idle host used {cpu:?} of CPU in {window:?} ({:.2} %)",
        share * 100.0
    );
    let new = &log_after[log_before.len().min(log_after.len())..];
    assert!(new.trim().is_empty(), "the idle host logged:\n{new}");
}
