//! Fuzzing on stable Rust: arbitrary input at each of the host's edges (config files, HTTP
//! bodies for every route, NATS messages, JSON Schemas, component bytes) never panics. Each
//! property runs 10,000 cases in the test suite; `CONVEYOR_FUZZ_CASES` runs more.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::{Method, Request};
use proptest::prelude::*;
use serde_json::Value;
use tower::ServiceExt;

fn cases() -> u32 {
    std::env::var("CONVEYOR_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000)
}

/// Arbitrary JSON, a few levels deep, with the shapes the host's types expect mixed in.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        "[a-z$#/]{0,12}".prop_map(Value::String),
        prop_oneof![Just("#"), Just("#/$defs/a"), Just("create"), Just("pipe")]
            .prop_map(|s| Value::String(s.into())),
    ];
    leaf.prop_recursive(4, 64, 6, |inner| {
        let key = prop_oneof![
            Just("name".to_string()),
            Just("resource".to_string()),
            Just("spec".to_string()),
            Just("schema".to_string()),
            Just("payload".to_string()),
            Just("event".to_string()),
            Just("$ref".to_string()),
            Just("allOf".to_string()),
            Just("properties".to_string()),
            Just("steps".to_string()),
            Just("metadata".to_string()),
            "[a-z]{1,6}",
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(key, inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// The embedded API over a fresh store, with no drivers, built once.
fn app() -> &'static (tokio::runtime::Runtime, axum::Router, tempfile::TempDir) {
    static APP: OnceLock<(tokio::runtime::Runtime, axum::Router, tempfile::TempDir)> =
        OnceLock::new();
    APP.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        let dir = tempfile::tempdir().expect("a temporary directory");
        let router = rt.block_on(async {
            let engine = crate::wasm::engine::build(&crate::wasm::engine::EngineSettings {
                pool_instances: 4,
                max_memory: 64 << 20,
            })
            .expect("an engine");
            let sandbox = Arc::new(crate::wasm::Sandbox::new(engine.clone()).expect("a sandbox"));
            let cache = crate::wasm::cache::ComponentCache::new(&engine, &dir.path().join("cache"))
                .expect("a cache");
            let drivers = dir.path().join("drivers");
            std::fs::create_dir_all(&drivers).expect("a drivers directory");
            let registry = Arc::new(crate::registry::Registry::new(
                &drivers,
                sandbox,
                cache,
                Arc::new(crate::wasm::imports::log::TracingSink),
            ));
            let _ = registry.load_all();
            let store = Arc::new(
                crate::store::Store::open(&dir.path().join("db.sqlite")).expect("a store"),
            );
            let metrics = Arc::new(crate::metrics::Metrics::new());
            let logs =
                crate::backend::embedded::logs::LogHub::start(store.clone(), metrics.clone());
            let resources = Arc::new(crate::backend::embedded::control::Resources::new(
                store.clone(),
                registry.clone(),
                std::time::Duration::from_millis(10),
            ));
            let routes = crate::api::embedded_routes(crate::api::EmbeddedState {
                resources,
                store: store.clone(),
                logs,
                cancellations: Default::default(),
                streams: crate::api::StreamSlots::new(8, 8),
            });
            crate::api::app(
                crate::api::OpsState {
                    registry,
                    metrics,
                    gauges: Some(store),
                },
                routes,
                crate::api::embedded_openapi(),
                crate::api::Auth::new(Vec::new(), None, true, false),
                1 << 20,
                &crate::api::CorsOrigins::Listed(Vec::new()),
            )
        });
        (rt, router, dir)
    })
}

/// Every route that takes a body, with the method that does.
const BODY_ROUTES: [(&str, &str); 10] = [
    ("POST", "/resource-definitions"),
    ("POST", "/resource-definitions/apply"),
    ("PUT", "/resource-definitions/pipe"),
    ("POST", "/resources"),
    ("PUT", "/resources/pipe/a"),
    ("POST", "/logs"),
    ("POST", "/pipelines"),
    ("PUT", "/pipelines/p"),
    ("POST", "/runs/r/cancel"),
    ("POST", "/drivers/d/drain"),
];

fn send(method: &str, path: &str, body: Vec<u8>) -> u16 {
    let (rt, router, _) = app();
    let request = Request::builder()
        .method(Method::from_bytes(method.as_bytes()).expect("a method"))
        .uri(path)
        .header("content-type", "application/json")
        .header("host", "localhost")
        .body(Body::from(body))
        .expect("a request");
    rt.block_on(router.clone().oneshot(request))
        .expect("the router is infallible")
        .status()
        .as_u16()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn config_text_never_panics(text in "(\\[[a-z.]{1,20}\\]\\n|[a-z_.]{1,20} = (\"[^\"]{0,10}\"|[0-9]{1,4}|true|\\[\\])\\n){0,12}") {
        let _ = crate::config::Config::parse(&text, Path::new("/nonexistent"));
    }

    #[test]
    fn arbitrary_config_bytes_never_panic(text in any::<String>()) {
        let _ = crate::config::Config::parse(&text, Path::new("/nonexistent"));
    }

    #[test]
    fn nats_messages_never_panic(bytes in any::<Vec<u8>>(), v in json()) {
        let _ = crate::backend::conveyor::jetstream::parse(&bytes);
        let _ = crate::backend::conveyor::jetstream::parse(v.to_string().as_bytes());
    }

    #[test]
    fn schemas_never_panic(v in json()) {
        let _ = crate::backend::embedded::schema::check(&v);
    }

    #[test]
    fn http_bodies_never_panic_nor_fail_the_server(
        route in 0..BODY_ROUTES.len(),
        v in json(),
        raw in any::<Vec<u8>>(),
        use_raw in any::<bool>(),
    ) {
        let (method, path) = BODY_ROUTES[route];
        let body = if use_raw { raw } else { v.to_string().into_bytes() };
        let status = send(method, path, body);
        prop_assert!(status < 500, "{method} {path} answered {status}");
    }
}

proptest! {
    // Compiling is the slow edge: random bytes behind a component header reach the parser.
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn component_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..256), header in any::<bool>()) {
        static ENGINE: OnceLock<wasmtime::Engine> = OnceLock::new();
        let engine = ENGINE.get_or_init(|| {
            crate::wasm::engine::build(&crate::wasm::engine::EngineSettings {
                pool_instances: 1,
                max_memory: 1 << 20,
            })
            .expect("an engine")
        });
        let mut bytes = if header { b"\0asm\x0d\0\x01\0".to_vec() } else { Vec::new() };
        bytes.extend(body);
        if crate::wasm::cache::check_header(&bytes).is_ok() {
            let _ = crate::wasm::cache::compile(engine, &bytes);
        }
    }
}
