//! Security: hostile schemas, authentication (tokens, tickets and upstream's certificate-bound
//! JWTs made by PyJWT), the `Host` header and the listen address, TLS, connection limits, the
//! drivers' budgets, cancelling a run, masking secrets, and the drivers directory at rest.

use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::certs::Ca;
use support::http::{find_driver, send};
use support::nats::{Conveyor, NatsServer, resource};
use support::{Host, Sse, Ws, parse_time, poll};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::OnceCell;

use crate::{Fixture, host_bin, workdir};

const READ: &str = "read-token-0123456789abcdef";
const WRITE: &str = "write-token-0123456789abcdef";
const ADMIN: &str = "admin-token-0123456789abcdef";

fn any_schema() -> Value {
    json!({"type": "object"})
}

/// A request with an optional bearer token, answered as (status, JSON body).
async fn call(
    host: &Host,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = reqwest::Client::new().request(method, host.at(path));
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    if let Some(b) = body {
        request = request.json(&b);
    }
    send(request).await
}

// ---- hostile schemas ----------------------------------------------------------------------

/// A host with the test driver and no authentication, shared by the schema and budget tests.
async fn plain() -> &'static Fixture {
    static HOST: OnceCell<Fixture> = OnceCell::const_new();
    HOST.get_or_init(|| async {
        let fixture = Fixture::start(
            &["test-driver"],
            "[defaults]\nmax_attempts = 1\n[drivers.test-driver]\nconcurrency = 4\n",
        );
        fixture.host.define("test", any_schema()).await;
        fixture
    })
    .await
}

/// A schema that refers to itself without descending into the instance is refused when
/// stored, with a 400 naming where.
#[tokio::test]
async fn a_self_referencing_schema_is_refused() {
    let host = &plain().await.host;
    let (status, body) = host
        .post(
            "/resource-definitions",
            &json!({"name": "selfref", "schema": {"allOf": [{"$ref": "#"}]}}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("/allOf/0")),
        "{body}"
    );
    let (status, _) = host.get("/resource-definitions/selfref").await;
    assert_eq!(status, 404, "a refused definition is not stored");
}

/// A cycle of references through two definitions of one schema is refused; so is a
/// reference to another document (a definition can only refer into itself).
#[tokio::test]
async fn cyclic_and_foreign_references_are_refused() {
    let host = &plain().await.host;
    let cyclic = json!({
        "$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}},
        "$ref": "#/$defs/a",
    });
    let foreign = json!({"$ref": "other-definition"});
    for (schema, named) in [
        (cyclic, "#/$defs/a -> #/$defs/b"),
        (foreign, "does not point into this schema"),
    ] {
        let (status, body) = host
            .post(
                "/resource-definitions",
                &json!({"name": "cyclic", "schema": schema}),
            )
            .await;
        assert_eq!(status, 400, "{schema}: {body}");
        assert!(
            body["error"].as_str().is_some_and(|e| e.contains(named)),
            "{body}"
        );
    }
}

/// A recursive schema that descends (a tree) is accepted, and an instance nested past the
/// validator's depth bound is refused with a 400, over HTTP and through the client import.
#[tokio::test]
async fn a_deep_instance_of_a_recursive_schema_is_refused() {
    let host = &plain().await.host;
    let tree = json!({"type": "object", "properties": {"child": {"$ref": "#"}}});
    host.define("tree", tree).await;
    let mut deep = json!({});
    for _ in 0..100 {
        deep = json!({ "child": deep });
    }
    let (status, body) = host
        .post(
            "/resources",
            &json!({"name": "deep", "resource": "tree", "spec": deep}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let nests = |e: &str| e.contains("Resource validation failed") && e.contains("nests more than");
    assert!(body["error"].as_str().is_some_and(nests), "{body}");
    let run = host
        .create(
            "test",
            "deep-create",
            json!({"action": "deep-create", "kind": "tree", "depth": 100}),
        )
        .await;
    let r = host.result(&run).await;
    assert_eq!(r["outcome"], "failure", "{r}");
    assert!(
        r["message"]
            .as_str()
            .is_some_and(|m| m.contains("invalid") && nests(m)),
        "{r}"
    );
    assert_eq!(host.get("/health").await.0, 200);
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the host's status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}

/// The attacks of the issue that took the daemon down, against the binary: it keeps serving
/// and its resident memory stays within 50 MiB of where it started.
#[tokio::test]
async fn hostile_schemas_leave_the_host_serving_within_50_mib() {
    let dir = workdir(&["test-driver"]);
    let host = crate::spawn(dir.path(), "[defaults]\nmax_attempts = 1\n");
    let pid = host.pid().expect("a spawned host");
    host.define("test", any_schema()).await;
    host.define("tree", json!({"properties": {"child": {"$ref": "#"}}}))
        .await;
    let before = rss_kib(pid);
    let hostile = [
        json!({"allOf": [{"$ref": "#"}]}),
        json!({"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}),
        json!({"anyOf": [{"$ref": "#"}, {"$ref": "#"}]}),
    ];
    for round in 0..20 {
        for (i, schema) in hostile.iter().enumerate() {
            let name = format!("hostile-{i}");
            let (status, body) = host
                .post(
                    "/resource-definitions",
                    &json!({"name": name, "schema": schema}),
                )
                .await;
            assert_eq!(status, 400, "{body}");
            let (status, body) = host
                .post(
                    "/resources",
                    &json!({"name": format!("r{round}"), "resource": name, "spec": {}}),
                )
                .await;
            assert!((400..500).contains(&status), "{status} {body}");
        }
        let mut deep = String::new();
        for _ in 0..5_000 {
            deep.push_str("{\"child\":");
        }
        deep.push_str("{}");
        deep.push_str(&"}".repeat(5_000));
        let body = format!(r#"{{"name":"deep{round}","resource":"tree","spec":{deep}}}"#);
        let (status, answer) = send(
            reqwest::Client::new()
                .post(host.at("/resources"))
                .header("content-type", "application/json")
                .body(body),
        )
        .await;
        assert_eq!(status, 400, "{answer}");
    }
    let run = host
        .create(
            "test",
            "client-deep",
            json!({"action": "deep-create", "kind": "tree", "depth": 1000}),
        )
        .await;
    let r = host.result(&run).await;
    assert_eq!(r["outcome"], "failure", "{r}");
    assert_eq!(host.get("/health").await.0, 200);
    let after = rss_kib(pid);
    eprintln!("RSS {before} KiB before, {after} KiB after");
    assert!(
        after < before + 50 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
}

// ---- authentication -----------------------------------------------------------------------

/// The certificates of the JWT tests: `ca.pem` and the leaf `ci-bot.*` it signs, and
/// `other-ci-bot.*` from another CA. Written into `dir`.
fn write_certificates(dir: &Path) {
    let ca = Ca::new("conveyor-test-ca");
    ca.write(dir, "ca");
    ca.leaf("ci-bot").write(dir, "ci-bot");
    Ca::new("another-ca")
        .leaf("ci-bot")
        .write(dir, "other-ci-bot");
}

/// A host with a token per role and upstream's JWTs (`ci-bot` is `admin`).
async fn guarded() -> &'static Fixture {
    static HOST: OnceCell<Fixture> = OnceCell::const_new();
    HOST.get_or_init(|| async {
        let dir = workdir(&["test-driver"]);
        std::fs::create_dir_all(dir.path().join("tokens")).expect("a tokens directory");
        for (name, token) in [("read", READ), ("write", WRITE), ("admin", ADMIN)] {
            std::fs::write(dir.path().join("tokens").join(name), format!("{token}\n"))
                .expect("write a token file");
        }
        write_certificates(dir.path());
        let config = r#"
[[api.auth.tokens]]
name = "reader"
role = "read"
file = "tokens/read"

[[api.auth.tokens]]
name = "writer"
role = "write"
file = "tokens/write"

[[api.auth.tokens]]
name = "operator"
role = "admin"
file = "tokens/admin"

[api.auth.jwt]
ca = "ca.pem"

[api.auth.jwt.subjects]
"ci-bot" = "admin"
"#;
        let host = Host::start(dir.path(), config);
        let (status, body) = call(
            &host,
            reqwest::Method::POST,
            "/resource-definitions",
            Some(WRITE),
            Some(json!({"name": "test", "schema": any_schema()})),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        Fixture { host, dir }
    })
    .await
}

/// One request of each class that needs credentials: (method, path, body).
fn guarded_routes() -> Vec<(reqwest::Method, &'static str, Option<Value>)> {
    use reqwest::Method;
    vec![
        (Method::GET, "/drivers", None),
        (Method::GET, "/runs", None),
        (Method::GET, "/logs?runid=none", None),
        (
            Method::POST,
            "/resources",
            Some(json!({"name": "x", "resource": "test", "spec": {}})),
        ),
        (Method::DELETE, "/resource-definitions/nothing", None),
        (
            Method::POST,
            "/logs",
            Some(
                json!({"driver": "d", "runid": "r", "pipeline": "", "timestamp": "", "message": "m"}),
            ),
        ),
        (Method::POST, "/drivers/nobody/drain", None),
        (Method::GET, "/resource-definitions", None),
        (Method::GET, "/resources/test", None),
    ]
}

/// Without credentials every class of route is 401 with upstream's error body.
#[tokio::test]
async fn without_credentials_every_guarded_route_is_401() {
    let host = &guarded().await.host;
    for (method, path, body) in guarded_routes() {
        let (status, answer) = call(host, method.clone(), path, None, body).await;
        assert_eq!(status, 401, "{method} {path}: {answer}");
        assert!(answer["error"].is_string(), "{method} {path}: {answer}");
    }
}

/// A token the host does not know is 401.
#[tokio::test]
async fn an_unknown_token_is_401() {
    let host = &guarded().await.host;
    let (status, body) = call(
        host,
        reqwest::Method::GET,
        "/drivers",
        Some("not-a-token-of-this-host"),
        None,
    )
    .await;
    assert_eq!(status, 401, "{body}");
}

/// `/health` and `/metrics` need no credentials.
#[tokio::test]
async fn health_and_metrics_are_open() {
    let host = &guarded().await.host;
    assert_eq!(host.get("/health").await.0, 200);
    let response = reqwest::get(host.at("/metrics"))
        .await
        .expect("GET /metrics");
    assert_eq!(response.status(), 200);
}

/// The dashboard's three files need no credentials (the sign-in form is one of them), carry a
/// policy that lets the page talk to this origin only, and hold no data; nothing else under
/// `/ui/` is served.
#[tokio::test]
async fn the_dashboards_files_are_open_and_hold_no_data() {
    let host = &guarded().await.host;
    for path in ["/ui/", "/ui", "/ui/app.js", "/ui/app.css"] {
        let response = reqwest::get(host.at(path))
            .await
            .expect("GET a dashboard file");
        assert_eq!(response.status(), 200, "{path}");
        let policy = response.headers()["content-security-policy"]
            .to_str()
            .unwrap_or_default()
            .to_string();
        assert!(
            policy.contains("default-src 'none'") && policy.contains("connect-src 'self'"),
            "{path}: {policy}"
        );
        let body = response.text().await.unwrap_or_default();
        assert!(!body.contains("test-driver"), "{path} holds data");
    }
    let (status, _) = support::http::send(reqwest::Client::new().get(host.at("/ui/drivers"))).await;
    assert_eq!(status, 401);
}

/// How a route answered a token: refused (401 or 403, with the status) or let through.
async fn answer(host: &Host, token: &str, route: usize) -> u16 {
    let (method, path, body) = guarded_routes().remove(route);
    call(host, method, path, Some(token), body).await.0
}

/// A read token reads, and gets 403 for writes and operations.
#[tokio::test]
async fn a_read_token_reads_and_nothing_more() {
    let host = &guarded().await.host;
    for route in [0, 1, 2, 7, 8] {
        assert_eq!(answer(host, READ, route).await, 200, "route {route}");
    }
    for route in 3..7 {
        assert_eq!(answer(host, READ, route).await, 403, "route {route}");
    }
}

/// A write token writes resources and definitions, and gets 403 for operations.
#[tokio::test]
async fn a_write_token_writes_but_does_not_operate() {
    let host = &guarded().await.host;
    assert_eq!(answer(host, WRITE, 0).await, 200);
    let created = call(
        host,
        reqwest::Method::POST,
        "/resources",
        Some(WRITE),
        Some(json!({"name": "by-writer", "resource": "test", "spec": {}})),
    )
    .await;
    assert_eq!(created.0, 201, "{}", created.1);
    assert_eq!(
        answer(host, WRITE, 4).await,
        404,
        "allowed, and no such definition"
    );
    assert_eq!(answer(host, WRITE, 5).await, 403);
    assert_eq!(answer(host, WRITE, 6).await, 403);
}

/// An admin token may write log lines and operate on drivers.
#[tokio::test]
async fn an_admin_token_operates() {
    let host = &guarded().await.host;
    assert_eq!(answer(host, ADMIN, 5).await, 201);
    assert_eq!(answer(host, ADMIN, 6).await, 200);
}

/// A run of the guarded host, created with the write token.
async fn guarded_run(name: &str) -> String {
    let host = &guarded().await.host;
    let (status, body) = call(
        host,
        reqwest::Method::POST,
        "/resources",
        Some(WRITE),
        Some(json!({"name": name, "resource": "test", "spec": {"lines": 2}})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    body["runid"].as_str().expect("runid").to_string()
}

/// A ticket for log streams, got with the read token.
async fn ticket(host: &Host) -> String {
    let (status, body) = call(
        host,
        reqwest::Method::POST,
        "/auth/tickets",
        Some(READ),
        None,
    )
    .await;
    assert_eq!(status, 201, "{body}");
    body["ticket"].as_str().expect("a ticket").to_string()
}

/// An SSE stream takes the token in its `Authorization` header, and is 401 without it.
#[tokio::test]
async fn an_sse_stream_takes_the_token_in_its_header() {
    let host = &guarded().await.host;
    let run = guarded_run("sse-auth").await;
    let path = format!("/logs/streams/test-driver/{run}");
    assert_eq!(
        call(host, reqwest::Method::GET, &path, None, None).await.0,
        401
    );
    let response = reqwest::Client::new()
        .get(host.at(&path))
        .bearer_auth(READ)
        .send()
        .await
        .expect("GET the stream");
    assert_eq!(response.status(), 200);
    let (lines, end) = Sse::new(response).until_end().await;
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(end["runid"], run.as_str(), "{end}");
}

/// A WebSocket stream takes a short-lived ticket in its URL (what a browser can send), and
/// never the long-lived token.
#[tokio::test]
async fn a_websocket_stream_takes_a_ticket_but_not_a_token_in_its_url() {
    let host = &guarded().await.host;
    let run = guarded_run("ws-auth").await;
    let url = host.ws_at(&format!("/logs/streams/test-driver/{run}"));
    assert_eq!(Ws::try_connect(&url).await.err(), Some(401));
    assert_eq!(
        Ws::try_connect(&format!("{url}?token={READ}")).await.err(),
        Some(401)
    );
    assert_eq!(
        Ws::try_connect(&format!("{url}?ticket=forged")).await.err(),
        Some(401)
    );
    let ticket = ticket(host).await;
    let mut ws = Ws::try_connect(&format!("{url}?ticket={ticket}"))
        .await
        .unwrap_or_else(|status| panic!("the ticket is refused: {status}"));
    let messages = ws.until_close().await;
    assert!(messages.len() >= 2, "{messages:?}");
}

/// Tokens made by PyJWT (with `cryptography`), a third-party implementation of upstream's
/// scheme: `valid`, `wrong_thumbprint`, `expired`, `other_ca`, `none` (alg none).
fn pyjwt_tokens(dir: &Path) -> &'static Value {
    static TOKENS: OnceLock<Value> = OnceLock::new();
    TOKENS.get_or_init(|| {
        let python = support::workspace().join(".tools/venv/bin/python");
        let script = r#"
import base64, hashlib, json, sys, time
import jwt

d = sys.argv[1]
def leaf(name):
    return open(f"{d}/{name}.der", "rb").read(), open(f"{d}/{name}.key", "rb").read()
def thumb(der):
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()
def token(der, key, cnf, iat, exp, alg="ES256"):
    claims = {"iat": iat, "exp": exp, "cnf": {"x5t#S256": cnf}}
    return jwt.encode(claims, key if alg != "none" else None, algorithm=alg,
                      headers={"x5c": [base64.b64encode(der).decode()]})
der, key = leaf("ci-bot")
other_der, other_key = leaf("other-ci-bot")
now = int(time.time())
print(json.dumps({
    "valid": token(der, key, thumb(der), now, now + 300),
    "wrong_thumbprint": token(der, key, thumb(other_der), now, now + 300),
    "expired": token(der, key, thumb(der), now - 600, now - 300),
    "other_ca": token(other_der, other_key, thumb(other_der), now, now + 300),
    "none": token(der, None, thumb(der), now, now + 300, alg="none"),
}))
"#;
        let out = std::process::Command::new(&python)
            .arg("-c")
            .arg(script)
            .arg(dir)
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {} ({e}): tests/run.sh installs PyJWT into .tools/",
                    python.display()
                )
            });
        assert!(
            out.status.success(),
            "PyJWT failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("the tokens as JSON")
    })
}

/// The guarded host's answer to `GET /drivers` with one of PyJWT's tokens.
async fn with_pyjwt(which: &str) -> (u16, Value) {
    let fixture = guarded().await;
    let token = pyjwt_tokens(fixture.dir.path())[which]
        .as_str()
        .expect("a token")
        .to_string();
    call(
        &fixture.host,
        reqwest::Method::GET,
        "/drivers",
        Some(&token),
        None,
    )
    .await
}

/// A JWT from PyJWT bound to a certificate of the configured CA is accepted with its
/// subject's role.
#[tokio::test]
async fn a_pyjwt_token_bound_to_the_ca_is_accepted() {
    let (status, body) = with_pyjwt("valid").await;
    assert_eq!(status, 200, "{body}");
    let fixture = guarded().await;
    let token = pyjwt_tokens(fixture.dir.path())["valid"]
        .as_str()
        .expect("a token");
    let (status, body) = call(
        &fixture.host,
        reqwest::Method::POST,
        "/drivers/nobody/drain",
        Some(token),
        None,
    )
    .await;
    assert_eq!(status, 200, "ci-bot is admin: {body}");
}

/// A JWT whose `cnf` thumbprint is another certificate's is refused.
#[tokio::test]
async fn a_jwt_with_a_wrong_thumbprint_is_refused() {
    assert_eq!(
        with_pyjwt("wrong_thumbprint").await,
        (401, json!({"error": "invalid token"}))
    );
}

/// An expired JWT is refused.
#[tokio::test]
async fn an_expired_jwt_is_refused() {
    assert_eq!(
        with_pyjwt("expired").await,
        (401, json!({"error": "invalid token"}))
    );
}

/// A JWT bound to a certificate of another CA is refused.
#[tokio::test]
async fn a_jwt_from_another_ca_is_refused() {
    assert_eq!(
        with_pyjwt("other_ca").await,
        (401, json!({"error": "invalid token"}))
    );
}

/// An unsigned JWT (`alg: none`) is refused.
#[tokio::test]
async fn an_unsigned_jwt_is_refused() {
    assert_eq!(
        with_pyjwt("none").await,
        (401, json!({"error": "invalid token"}))
    );
}

/// NATS mode's API client signs a JWT with `[conveyor]`'s certificate for every call, and an
/// embedded host with JWT authentication (standing in for a Conveyor server with
/// `api.auth_enabled`) accepts them.
#[tokio::test]
async fn nats_mode_client_calls_are_accepted_by_a_jwt_protected_api() {
    let api_dir = workdir(&[]);
    write_certificates(api_dir.path());
    std::fs::write(api_dir.path().join("admin-token"), ADMIN).expect("write the token");
    let api = Host::start(
        api_dir.path(),
        "[[api.auth.tokens]]\nname = \"test\"\nrole = \"admin\"\nfile = \"admin-token\"\n\n\
         [api.auth.jwt]\nca = \"ca.pem\"\n\n[api.auth.jwt.subjects]\n\"ci-bot\" = \"write\"\n",
    );
    for (path, body) in [
        (
            "/resource-definitions",
            json!({"name": "test", "schema": any_schema()}),
        ),
        (
            "/resources",
            json!({"name": "probe", "resource": "test", "spec": {"action": "client"}}),
        ),
    ] {
        let (status, answer) =
            call(&api, reqwest::Method::POST, path, Some(ADMIN), Some(body)).await;
        assert_eq!(status, 201, "{path}: {answer}");
    }

    let dir = workdir(&["test-driver"]);
    let server = NatsServer::start(dir.path());
    let conveyor = Conveyor::connect(&server.url).await;
    let key = api_dir.path().join("ci-bot.key");
    let cert = api_dir.path().join("ci-bot.crt");
    let host = Host::start(
        dir.path(),
        &format!(
            "[events]\nsource = \"nats\"\nurl = \"{}\"\n\n[conveyor]\napi_url = \"{}\"\n\
             cert = {cert:?}\nkey = {key:?}\n\n[defaults]\nmax_attempts = 1\n",
            server.url, api.url
        ),
    );
    conveyor.wait_for_consumer("test-driver").await;
    let probe = resource("test", "probe", json!({"action": "client"}));
    let run = conveyor.publish("resources.test", "create", &probe).await;
    let results = conveyor.results(1, Duration::from_secs(60)).await;
    let result = results
        .iter()
        .find(|r| r["run_id"] == run.as_str())
        .unwrap_or_else(|| panic!("no result for {run}: {results:?}\n{}", host.log()));
    assert_eq!(result["driverresult"]["success"], true, "{result}");
    assert_eq!(
        result["driverresult"]["data"]["definition"], "test",
        "{result}"
    );
}

// ---- the listen address and the Host header ------------------------------------------------

/// Without authentication, a non-loopback `api.listen` stops the host at start with a message
/// naming `api.insecure`.
#[tokio::test]
async fn listening_on_every_address_without_auth_is_refused() {
    let dir = workdir(&[]);
    let config = dir.path().join("host.toml");
    std::fs::write(
        &config,
        "drivers_dir = \"drivers\"\ndata_dir = \"data\"\n[api]\nlisten = \"0.0.0.0:0\"\n",
    )
    .expect("write the config");
    // `timeout`, so that a host that starts anyway fails the test instead of hanging it.
    let out = std::process::Command::new("timeout")
        .arg("30")
        .arg(host_bin())
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .expect("run the host");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("api.insecure"), "{stderr}");
}

/// Without authentication, a request whose `Host` is not loopback (DNS rebinding) is 403;
/// the same request addressed to localhost is served.
#[tokio::test]
async fn a_foreign_host_header_is_refused_without_auth() {
    let host = &plain().await.host;
    let port = host.url.rsplit(':').next().expect("a port");
    let with_host = |h: String| {
        send(
            reqwest::Client::new()
                .get(host.at("/drivers"))
                .header("host", h),
        )
    };
    let (status, body) = with_host(format!("rebind.example.com:{port}")).await;
    assert_eq!(status, 403, "{body}");
    assert!(body["error"].is_string(), "{body}");
    assert_eq!(with_host(format!("localhost:{port}")).await.0, 200);
}

// ---- TLS ----------------------------------------------------------------------------------

/// A client that trusts the test's CA, optionally presenting a client certificate.
fn tls_client(dir: &Path, identity: Option<&str>) -> reqwest::Client {
    let ca = std::fs::read(dir.join("ca.pem")).expect("the CA");
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("a CA certificate"));
    if let Some(name) = identity {
        let mut pem = std::fs::read(dir.join(format!("{name}.crt"))).expect("the certificate");
        pem.extend(std::fs::read(dir.join(format!("{name}.key"))).expect("the key"));
        builder = builder.identity(reqwest::Identity::from_pem(&pem).expect("an identity"));
    }
    builder.build().expect("a TLS client")
}

/// With `[api.tls]` the API is served over HTTPS with the given certificate, which a client
/// trusting its CA verifies; plain HTTP gets no answer.
#[tokio::test]
async fn the_api_serves_https_with_the_configured_certificate() {
    let dir = workdir(&[]);
    write_certificates(dir.path());
    let host = Host::start(
        dir.path(),
        "[api.tls]\ncert = \"ci-bot.crt\"\nkey = \"ci-bot.key\"\n",
    );
    assert!(host.url.starts_with("https://127.0.0.1:"), "{}", host.url);
    let client = tls_client(dir.path(), None);
    let response = client
        .get(host.at("/drivers"))
        .send()
        .await
        .expect("GET over TLS");
    assert_eq!(response.status(), 200);
    let plain = host.url.replacen("https", "http", 1);
    let answer = reqwest::Client::new()
        .get(format!("{plain}/health"))
        .timeout(Duration::from_secs(15))
        .send()
        .await;
    assert!(
        answer.as_ref().map_or(true, |r| !r.status().is_success()),
        "plain HTTP was served: {answer:?}"
    );
}

/// With `api.tls.client_ca`, a client without a certificate of that CA is refused in the
/// handshake, and one with it is served (mTLS).
#[tokio::test]
async fn mutual_tls_requires_a_client_certificate() {
    let dir = workdir(&[]);
    write_certificates(dir.path());
    let host = Host::start_serving(
        dir.path(),
        "[api.tls]\ncert = \"ci-bot.crt\"\nkey = \"ci-bot.key\"\nclient_ca = \"ca.pem\"\n",
    );
    let refused = tls_client(dir.path(), None)
        .get(host.at("/health"))
        .send()
        .await;
    assert!(
        refused.is_err(),
        "served without a client certificate: {refused:?}"
    );
    let refused = tls_client(dir.path(), Some("other-ci-bot"))
        .get(host.at("/health"))
        .send()
        .await;
    assert!(
        refused.is_err(),
        "served another CA's certificate: {refused:?}"
    );
    let served = tls_client(dir.path(), Some("ci-bot"))
        .get(host.at("/health"))
        .send()
        .await
        .expect("served with the client certificate");
    assert_eq!(served.status(), 200);
}

// ---- connections --------------------------------------------------------------------------

/// 2,000 idle connections to a host whose open-file limit is 1,024 (a usual default) leave
/// `GET /health` answering within a second.
#[tokio::test]
async fn two_thousand_idle_connections_leave_health_answering() {
    let dir = workdir(&[]);
    let host = Host::spawn_limited(host_bin(), dir.path(), "", &[], Some(1024));
    host.settle();
    let addr = host.url.trim_start_matches("http://").to_string();
    let mut idle = Vec::with_capacity(2_000);
    for _ in 0..2_000 {
        match tokio::net::TcpStream::connect(&addr).await {
            Ok(s) => idle.push(s),
            Err(e) => panic!("connection {} refused: {e}", idle.len()),
        }
    }
    // Give the host's accept loop time to take them all.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let start = Instant::now();
    let response = reqwest::Client::new()
        .get(host.at("/health"))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    let took = start.elapsed();
    let status = response.map(|r| r.status().as_u16());
    assert_eq!(status.ok(), Some(200), "host log:\n{}", host.log());
    assert!(took < Duration::from_secs(1), "/health took {took:?}");
    drop(idle);
}

/// A connection that sends part of its headers is closed after `api.header_timeout`.
#[tokio::test]
async fn a_slow_header_connection_is_closed_after_the_timeout() {
    let dir = workdir(&[]);
    // Appended right after the harness's [api] table, so the key lands in it.
    let host = Host::start(dir.path(), "header_timeout = \"1s\"\n");
    let addr = host.url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .expect("send part of the headers");
    let start = Instant::now();
    let mut buf = [0u8; 1024];
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
        .await
        .expect("the host closes the connection within 10 s");
    let took = start.elapsed();
    assert!(
        matches!(read, Ok(0) | Err(_)) || buf.starts_with(b"HTTP/1.1 408"),
        "{read:?}: {}",
        String::from_utf8_lossy(&buf)
    );
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_secs(3),
        "closed after {took:?}"
    );
}

/// 2,000 open WebSocket log streams cost the binary little memory, and closing them gives
/// it back (the issue found 256 MiB held after they closed).
#[tokio::test]
async fn two_thousand_websocket_streams_cost_little_and_return_it() {
    let dir = workdir(&["test-driver"]);
    // Right after the harness's [api] table: room for every stream from this one client.
    let config = "max_connections = 4000\nmax_connections_per_client = 4000\n\
                  max_streams = 4000\nmax_streams_per_client = 4000\n";
    let host = crate::spawn(dir.path(), config);
    let pid = host.pid().expect("a spawned host");
    host.define("test", any_schema()).await;
    let run = host
        .create("test", "slow", json!({"action": "sleep", "ms": 25_000}))
        .await;
    let url = host.ws_at(&format!("/logs/streams/test-driver/{run}"));
    let start = rss_kib(pid);
    let mut streams = Vec::with_capacity(2_000);
    for _ in 0..2_000 {
        streams.push(Ws::connect(&url).await);
    }
    let open = rss_kib(pid);
    drop(streams);
    let closed = poll(
        Duration::from_secs(10),
        Duration::from_millis(200),
        || async {
            let now = rss_kib(pid);
            if now < start + 16 * 1024 {
                Ok(now)
            } else {
                Err(now)
            }
        },
    )
    .await;
    eprintln!("RSS {start} KiB, {open} KiB with 2,000 streams open, {closed:?} KiB after");
    assert!(
        open < start + 64 * 1024,
        "2,000 streams cost {} KiB",
        open - start
    );
    assert!(
        closed.is_ok(),
        "RSS {closed:?} KiB after closing, {start} KiB before"
    );
}

/// A body over `api.max_body` (4 MiB by default) gets 413 with a JSON error.
#[tokio::test]
async fn a_body_over_the_limit_gets_413() {
    let host = &plain().await.host;
    let spec = "x".repeat(5 << 20);
    let (status, body) = host
        .post(
            "/resources",
            &json!({"name": "huge", "resource": "test", "spec": {"blob": spec}}),
        )
        .await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body, json!({"error": "Request body is too large"}));
}

// ---- drivers' budgets and cancelling ------------------------------------------------------

/// A driver that creates resources in a loop is refused past `creates_per_run` (100), with a
/// `denied` client error and one host line; the host keeps answering.
#[tokio::test]
async fn a_create_loop_is_stopped_at_its_budget() {
    let host = &plain().await.host;
    host.define("note", any_schema()).await;
    let run = host
        .create(
            "test",
            "looper",
            json!({"action": "create-loop", "kind": "note"}),
        )
        .await;
    let r = host.result(&run).await;
    assert_eq!(r["data"]["created"], 100, "{r}");
    assert!(
        r["data"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("denied")),
        "{r}"
    );
    let host_lines: Vec<Value> = host
        .logs(&run)
        .await
        .into_iter()
        .filter(|l| l["source"] == "host")
        .collect();
    assert_eq!(host_lines.len(), 1, "{host_lines:?}");
    assert_eq!(host.get("/health").await.0, 200);
    assert_eq!(host.get("/resources/note/looper-99").await.0, 200);
    assert_eq!(host.get("/resources/note/looper-100").await.0, 404);
}

/// A driver whose client writes queue events (resources of the type it listens to) is
/// refused once `queued_writes` of them wait, and the events it did queue run.
#[tokio::test]
async fn a_drivers_own_writes_stop_at_queued_writes() {
    let dir = workdir(&["test-driver"]);
    let host = Host::start(dir.path(), "[drivers.test-driver]\nqueued_writes = 5\n");
    host.define("test", any_schema()).await;
    // One reconcile at a time: none of the five starts while the loop runs.
    let run = host
        .create(
            "test",
            "feeder",
            json!({"action": "create-loop", "kind": "test"}),
        )
        .await;
    let r = host.result(&run).await;
    assert_eq!(r["data"]["created"], 5, "{r}");
    assert!(
        r["data"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("denied: ") && e.contains("queued_writes")),
        "{r}"
    );
    let (_, runs) = host.get("/runs?resource=feeder-4").await;
    let fed = runs[0]["runid"]
        .as_str()
        .expect("feeder-4's run")
        .to_string();
    let over = host.finished_run(&fed, Duration::from_secs(60)).await;
    assert_eq!(over["status"], "succeeded", "{over}");
}

/// Cancelling a run stops its spinning reconcile within 100 ms, with outcome `cancelled`,
/// and the run ends `cancelled`.
#[tokio::test]
async fn cancelling_a_run_stops_a_spinning_reconcile_within_100_ms() {
    let host = &plain().await.host;
    let run = host
        .create("test", "spinner", json!({"action": "loop"}))
        .await;
    let running = poll(
        Duration::from_secs(30),
        Duration::from_millis(20),
        || async {
            let (_, body) = host.get(&format!("/runs/{run}")).await;
            if body["steps"][0]["status"] == "running" {
                Ok(())
            } else {
                Err(body)
            }
        },
    )
    .await;
    running.unwrap_or_else(|b| panic!("the reconcile never ran: {b}"));
    let asked = time::OffsetDateTime::now_utc();
    let (status, body) = host.post(&format!("/runs/{run}/cancel"), &json!({})).await;
    assert_eq!(status, 200, "{body}");
    let r = host.result(&run).await;
    assert_eq!(r["outcome"], "cancelled", "{r}");
    let stopped = parse_time(&r["finished_at"]) - asked;
    assert!(
        stopped < time::Duration::milliseconds(100),
        "stopped {stopped} after the cancel"
    );
    let over = host.finished_run(&run, Duration::from_secs(10)).await;
    assert_eq!(over["status"], "cancelled", "{over}");
}

// ---- masking secrets ----------------------------------------------------------------------

const SECRET: &str = "s3cr3t-value-0042";
const MULTILINE_FIRST: &str = "first-line-of-the-key";
const MULTILINE_SECOND: &str = "second-line-of-the-key";

/// A host whose test driver holds two secrets: `TOKEN` ([`SECRET`]) and `KEY`, a multi-line
/// one read from a file.
async fn secretive() -> &'static Fixture {
    static HOST: OnceCell<Fixture> = OnceCell::const_new();
    HOST.get_or_init(|| async {
        let dir = workdir(&["test-driver"]);
        std::fs::write(dir.path().join("token"), SECRET).expect("write the secret");
        std::fs::write(
            dir.path().join("key"),
            format!("{MULTILINE_FIRST}\n{MULTILINE_SECOND}\n"),
        )
        .expect("write the key");
        let host = Host::start(
            dir.path(),
            "[defaults]\nmax_attempts = 1\n\n[drivers.test-driver.secrets]\n\
             TOKEN = { file = \"token\" }\nKEY = { file = \"key\" }\n",
        );
        host.define("test", any_schema()).await;
        host.define("note", any_schema()).await;
        Fixture { host, dir }
    })
    .await
}

/// Everything stored of a run, as text: its log lines and its results.
async fn stored_text(host: &Host, run: &str) -> String {
    let (_, body) = host.get(&format!("/runs/{run}")).await;
    let lines: Vec<String> = host.logs(run).await.iter().map(Value::to_string).collect();
    format!("{}\n{body}", lines.join("\n"))
}

/// A secret used as a label's name is masked.
#[tokio::test]
async fn a_secret_in_a_label_name_is_masked() {
    let host = &secretive().await.host;
    let run = host
        .create(
            "test",
            "label",
            json!({"action": "secret-label", "name": "TOKEN"}),
        )
        .await;
    host.result(&run).await;
    let text = stored_text(host, &run).await;
    assert!(!text.contains(SECRET), "{text}");
    assert!(text.contains("***"), "{text}");
}

/// A secret across the point where a long stdout line is cut (16 KiB) is masked whole:
/// neither piece is stored, not even split over two lines.
#[tokio::test]
async fn a_secret_across_a_cut_stdout_line_is_masked() {
    let host = &secretive().await.host;
    let pad = (16 << 10) - SECRET.len() / 2;
    let run = host
        .create(
            "test",
            "long-line",
            json!({"action": "secret-long", "name": "TOKEN", "pad": pad}),
        )
        .await;
    host.result(&run).await;
    let joined: String = host
        .logs(&run)
        .await
        .iter()
        .filter_map(|l| l["message"].as_str().map(str::to_string))
        .collect();
    assert!(!joined.contains(SECRET), "the secret is stored in pieces");
    assert!(
        !joined.contains(&SECRET[..SECRET.len() / 2 + 1]),
        "a piece is stored"
    );
    assert!(joined.contains("***"));
}

/// A multi-line secret printed to stdout is masked whole: its line break does not end the
/// line, so neither of its lines is stored.
#[tokio::test]
async fn a_multi_line_secret_is_masked_whole() {
    let host = &secretive().await.host;
    let run = host
        .create(
            "test",
            "multiline",
            json!({"action": "secret", "name": "KEY"}),
        )
        .await;
    host.result(&run).await;
    let text = stored_text(host, &run).await;
    assert!(!text.contains(MULTILINE_FIRST), "{text}");
    assert!(!text.contains(MULTILINE_SECOND), "{text}");
}

/// A secret a driver writes through the client import is masked before it is stored, and the
/// run's log says so.
#[tokio::test]
async fn a_secret_written_through_the_client_is_masked() {
    let host = &secretive().await.host;
    let run = host
        .create(
            "test",
            "writer",
            json!({"action": "secret-create", "name": "TOKEN", "kind": "note"}),
        )
        .await;
    let r = host.result(&run).await;
    assert_eq!(r["outcome"], "success", "{r}");
    let (status, made) = host.get("/resources/note/writer-made").await;
    assert_eq!(status, 200, "{made}");
    assert_eq!(made["spec"]["token"], "***", "{made}");
    let notes: Vec<Value> = host
        .logs(&run)
        .await
        .into_iter()
        .filter(|l| l["source"] == "host")
        .collect();
    assert_eq!(notes.len(), 1, "{notes:?}");
}

// ---- the drivers directory ----------------------------------------------------------------

/// Two files whose drivers have the same name: the first by file name keeps it, the other is
/// listed failed naming the file that holds it.
#[tokio::test]
async fn a_driver_name_clash_goes_to_the_first_file() {
    let dir = workdir(&[]);
    let wasm = support::driver_file("test-driver");
    for file in ["a-first.wasm", "b-second.wasm"] {
        std::fs::copy(&wasm, dir.path().join("drivers").join(file)).expect("copy the driver");
    }
    let host = Host::start(dir.path(), "");
    let (_, list) = host.get("/drivers").await;
    let entries = list.as_array().expect("a list");
    let ready = find_driver(&list, "test-driver").expect("test-driver listed");
    assert_eq!(ready["state"], "ready", "{list}");
    assert!(
        ready["file"]
            .as_str()
            .is_some_and(|f| f.ends_with("a-first.wasm")),
        "{list}"
    );
    let failed = entries
        .iter()
        .find(|d| {
            d["file"]
                .as_str()
                .is_some_and(|f| f.ends_with("b-second.wasm"))
        })
        .unwrap_or_else(|| panic!("b-second.wasm is not listed: {list}"));
    assert_eq!(failed["state"], "failed", "{list}");
    assert!(
        failed["error"]
            .as_str()
            .is_some_and(|e| e.contains("a-first.wasm")),
        "{failed}"
    );
}

/// An idle host with three drivers reads none of their files again over 10 s (more than
/// three of the watcher's longest waits, `MAX_WAIT`).
#[tokio::test]
async fn an_idle_host_rereads_no_driver_file() {
    let dir = workdir(&["test-driver", "noop-driver", "sample-driver"]);
    let host = Host::start(dir.path(), "");
    let loads = |list: &Value| -> Vec<(String, u64)> {
        let mut loads: Vec<(String, u64)> = list
            .as_array()
            .expect("a list")
            .iter()
            .map(|d| {
                (
                    d["file"].as_str().unwrap_or_default().to_string(),
                    d["loads"].as_u64().unwrap_or(u64::MAX),
                )
            })
            .collect();
        loads.sort();
        loads
    };
    let (_, list) = host.get("/drivers").await;
    let before = loads(&list);
    assert_eq!(before.len(), 3, "{list}");
    assert!(before.iter().all(|(_, n)| *n == 1), "{before:?}");
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (_, list) = host.get("/drivers").await;
    assert_eq!(loads(&list), before, "{list}");
}
