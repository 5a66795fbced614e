//! The dashboard at `/ui/`, in a real headless Chromium (Debian's `chromium`; tests/run.sh
//! installs it), driven over the DevTools protocol: one walk through it as an operator would
//! (sign in, drivers, a run arriving, its logs live, a failed run, 10,000 lines, a narrow
//! window), run once; each test checks its part. Screenshots of every page are saved under
//! `target/test-artefacts/dashboard/`; the README's come from there.
//!
//! The page must report no error on the way: no exception, no `console.error`, no failed
//! load except the 401s the refused sign-in is made of.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};
use support::browser::{Browser, PageError};
use support::nats::{Conveyor, NatsServer};
use support::{Host, target_dir};
use tokio::sync::OnceCell;

use crate::workdir;

/// The dashboard's token (read is all the dashboard needs) and the test's own, to write.
const READER: &str = "dashboard-reader-0123456789abcdef";
const WRITER: &str = "dashboard-writer-0123456789abcdef";

/// What the walk saw. A step that failed records why, and the steps after it do not run.
#[derive(Debug, Default)]
struct Walk {
    /// The sign-in form's alert after a wrong token.
    refusal: Option<String>,
    /// `(driver, state)` of each row of the drivers page.
    drivers: Vec<(String, String)>,
    /// Whether the new run's row appeared on the runs page with the page never reloaded.
    run_appeared_without_reload: Option<bool>,
    /// The line counts the run page showed, in the order seen, while the run went on.
    line_counts: Vec<u64>,
    /// The five lines' messages and `step` labels as the page shows them.
    lines: Vec<(String, String)>,
    /// The run's status on its page and the end-of-run marker's text.
    final_status: Option<String>,
    end_marker: Option<String>,
    /// Visible lines after clicking the `step=3` label.
    filtered: Vec<String>,
    /// The failed run's failure kind and message, as its page shows them.
    failure: Option<(String, String)>,
    /// The flooded run: the lines shown (the driver's 10,000 and the host's two), and those
    /// still visible after clicking a `source=host` label.
    flood: Option<(u64, u64)>,
    /// The resource page's driver results and the types page's rows.
    driver_results: Vec<String>,
    types: Vec<String>,
    /// Widest content at a 400 px window, next to the window's width.
    narrow: Option<(u64, u64)>,
    /// From the top of the runs page, by keyboard alone: the focused element after two Tabs,
    /// and the page Enter opened.
    keyboard: Option<(String, String)>,
    /// Errors the page reported.
    errors: Vec<PageError>,
    /// Why the walk stopped early, if it did.
    stopped: Option<String>,
}

/// Where the screenshots go.
fn artefacts() -> PathBuf {
    target_dir().join("test-artefacts").join("dashboard")
}

async fn walk() -> &'static Walk {
    static WALK: OnceCell<Walk> = OnceCell::const_new();
    WALK.get_or_init(|| async {
        let dir = workdir(&["sample-driver", "test-driver"]);
        std::fs::create_dir_all(dir.path().join("tokens")).expect("a tokens directory");
        std::fs::write(dir.path().join("tokens/read"), READER).expect("write a token");
        std::fs::write(dir.path().join("tokens/write"), WRITER).expect("write a token");
        let host = Host::start(
            dir.path(),
            r#"
[[api.auth.tokens]]
name = "dashboard"
role = "read"
file = "tokens/read"

[[api.auth.tokens]]
name = "test"
role = "write"
file = "tokens/write"

[defaults]
max_attempts = 1
log_lines = 10000
"#,
        );
        let mut walk = Walk::default();
        if let Err(e) = walk_through(&host, &mut walk).await {
            walk.stopped = Some(format!("{e:#}\nhost log:\n{}", host.log()));
        }
        drop(dir);
        walk
    })
    .await
}

/// A request with the writer's token: (status, JSON body).
async fn write(host: &Host, method: reqwest::Method, path: &str, body: Value) -> (u16, Value) {
    support::http::send(
        reqwest::Client::new()
            .request(method, host.at(path))
            .bearer_auth(WRITER)
            .json(&body),
    )
    .await
}

async fn create(host: &Host, kind: &str, name: &str, spec: Value) -> anyhow::Result<String> {
    let (status, body) = write(
        host,
        reqwest::Method::POST,
        "/resources",
        json!({"name": name, "resource": kind, "spec": spec}),
    )
    .await;
    anyhow::ensure!(status == 201, "creating {kind}/{name}: {status} {body}");
    body["runid"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("no runid in {body}"))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|s| s.as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// A JSON list of two-string lists, as pairs.
fn pairs(v: &Value) -> Vec<(String, String)> {
    v.as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let s = strings(r);
            (
                s.first().cloned().unwrap_or_default(),
                s.get(1).cloned().unwrap_or_default(),
            )
        })
        .collect()
}

async fn walk_through(host: &Host, walk: &mut Walk) -> anyhow::Result<()> {
    for (kind, schema) in [
        ("resource-1", json!({"type": "object"})),
        ("test", json!({"type": "object"})),
    ] {
        let (status, body) = write(
            host,
            reqwest::Method::POST,
            "/resource-definitions",
            json!({"name": kind, "schema": schema}),
        )
        .await;
        anyhow::ensure!(status == 201, "defining {kind}: {status} {body}");
    }
    let shots = artefacts();
    let browser = Browser::launch(1280, 900).await?;
    let result = pages(host, walk, &browser, &shots).await;
    walk.errors = browser.errors();
    result
}

async fn pages(
    host: &Host,
    walk: &mut Walk,
    b: &Browser,
    shots: &std::path::Path,
) -> anyhow::Result<()> {
    // ---- sign in: a wrong token first ----
    b.goto(&host.at("/ui/")).await?;
    b.wait_for(
        "document.querySelector('#signin #token')",
        "the sign-in form",
    )
    .await?;
    b.eval("document.querySelector('#token').value = 'not-a-token'; document.querySelector('#signin button[type=submit]').click()")
        .await?;
    let refusal = b
        .wait_for(
            "(e => e && !e.hidden && e.textContent)(document.querySelector('#signin-error'))",
            "the refusal",
        )
        .await?;
    walk.refusal = refusal.as_str().map(str::to_string);
    b.screenshot(&shots.join("signin-refused.png")).await?;
    b.eval(&format!("document.querySelector('#token').value = '{READER}'; document.querySelector('#signin button[type=submit]').click()"))
        .await?;
    b.wait_for(
        "document.querySelector('#runs')",
        "the runs page after signing in",
    )
    .await?;

    // ---- by keyboard: Tab past the skip link to the first page link, Enter opens it ----
    // (A fresh load, so that focus starts at the top; the token stays in the tab.)
    b.reload().await?;
    b.wait_for("document.querySelector('#runs')", "the runs page, reloaded")
        .await?;
    b.press("Tab").await?;
    b.press("Tab").await?;
    let focused = b.eval("document.activeElement.textContent").await?;
    b.press("Enter").await?;
    let opened = b
        .wait_for(
            "location.hash !== '#/runs' && location.hash",
            &format!("a page opened by Enter on {focused}"),
        )
        .await?;
    walk.keyboard = Some((
        focused.as_str().unwrap_or_default().to_string(),
        opened.as_str().unwrap_or_default().to_string(),
    ));

    // ---- drivers ----
    b.eval("location.hash = '#/drivers'").await?;
    let rows = b
        .wait_for(
            "(rows => rows.length >= 2 && rows)(Array.from(document.querySelectorAll('#drivers tbody tr')).map(r => [r.dataset.driver, r.querySelector('.state .status').dataset.status]))",
            "two driver rows",
        )
        .await?;
    walk.drivers = pairs(&rows);
    b.screenshot(&shots.join("drivers.png")).await?;

    // ---- a new run appears on the runs page without a reload ----
    b.eval("location.hash = '#/runs'").await?;
    b.wait_for("document.querySelector('#runs tbody')", "the runs page")
        .await?;
    b.eval("window.__notReloaded = true").await?;
    let run = create(host, "resource-1", "app", json!({"delay_ms": 1000})).await?;
    b.wait_for(
        &format!("document.querySelector('#runs tr[data-run=\"{run}\"]')"),
        "the new run's row",
    )
    .await?;
    walk.run_appeared_without_reload = b.eval("window.__notReloaded === true").await?.as_bool();
    b.screenshot(&shots.join("runs.png")).await?;

    // ---- its page: the lines as they arrive, then the final status ----
    b.eval(&format!(
        "document.querySelector('#runs tr[data-run=\"{run}\"] a[href^=\"#/runs/\"]').click()"
    ))
    .await?;
    b.wait_for("document.querySelector('#log')", "the run page")
        .await?;
    let lines = "document.querySelectorAll('#log .line:not(.end)').length";
    loop {
        let n = b.eval(lines).await?.as_u64().unwrap_or(0);
        if walk.line_counts.last() != Some(&n) {
            walk.line_counts.push(n);
        }
        if n >= 5 {
            break;
        }
        anyhow::ensure!(walk.line_counts.len() < 10_000, "no end to the lines");
        tokio::time::sleep(Duration::from_millis(50)).await;
        if b.eval("!!document.querySelector('#log-end')").await? == json!(true) {
            break;
        }
    }
    let end = b
        .wait_for(
            "(e => e && e.textContent)(document.querySelector('#log-end'))",
            "the end-of-run marker",
        )
        .await?;
    walk.end_marker = end.as_str().map(str::to_string);
    let status = b
        .wait_for(
            "(e => e && ['succeeded','failed'].includes(e.dataset.status) && e.dataset.status)(document.querySelector('#run-status'))",
            "the run's final status",
        )
        .await?;
    walk.final_status = status.as_str().map(str::to_string);
    let shown = b
        .eval("Array.from(document.querySelectorAll('#log .line:not(.end)')).map(l => [l.querySelector('.msg').textContent, Array.from(l.querySelectorAll('.label')).map(x => x.textContent).join(' ')])")
        .await?;
    walk.lines = pairs(&shown);
    b.screenshot(&shots.join("run.png")).await?;
    b.eval("document.querySelector('#log .label[data-key=\"step\"][data-value=\"3\"]').click()")
        .await?;
    let filtered = b
        .wait_for(
            "(v => v.length < 5 && v)(Array.from(document.querySelectorAll('#log .line:not(.end):not([hidden]) .msg')).map(m => m.textContent))",
            "the label filter",
        )
        .await?;
    walk.filtered = strings(&filtered);

    // ---- a failed run ----
    let failed = create(
        host,
        "test",
        "broken",
        json!({"action": "fail", "message": "the build broke"}),
    )
    .await?;
    open_run(b, &failed).await?;
    let failure = b
        .wait_for(
            "(k => k && [k.textContent, document.querySelector('#steps .failure-message').textContent])(document.querySelector('#steps .failure-kind'))",
            "the failed step's failure",
        )
        .await?;
    let f = strings(&failure);
    walk.failure = Some((f[0].clone(), f[1].clone()));
    b.wait_for("document.querySelector('#log-end')", "the failed run's end")
        .await?;
    b.screenshot(&shots.join("run-failed.png")).await?;

    // ---- 10,000 lines ----
    let flood = create(host, "test", "flood", json!({"action": "flood"})).await?;
    open_run(b, &flood).await?;
    b.wait_for(
        "document.querySelector('#log-end')",
        "the flooded run's end",
    )
    .await?;
    let all = b.eval(lines).await?.as_u64().unwrap_or(0);
    b.screenshot(&shots.join("run-10000-lines.png")).await?;
    b.eval(
        "document.querySelector('#log .label[data-key=\"source\"][data-value=\"host\"]').click()",
    )
    .await?;
    let host_lines = b
        .wait_for(
            "(n => n < 100 && n)(document.querySelectorAll('#log .line:not(.end):not([hidden])').length)",
            "the source=host filter",
        )
        .await?;
    walk.flood = Some((all, host_lines.as_u64().unwrap_or(0)));

    // ---- resources and definitions ----
    b.eval("location.hash = '#/resources'").await?;
    let types = b
        .wait_for(
            "(r => r.length && r)(Array.from(document.querySelectorAll('#definitions tbody tr')).map(r => r.dataset.type))",
            "the resource types",
        )
        .await?;
    walk.types = strings(&types);
    b.eval("location.hash = '#/resources/resource-1/app'")
        .await?;
    let results = b
        .wait_for(
            "(r => r.length && r)(Array.from(document.querySelectorAll('.driver-result h3')).map(h => h.textContent))",
            "the resource's driver results",
        )
        .await?;
    walk.driver_results = strings(&results);
    b.screenshot(&shots.join("resource.png")).await?;

    // ---- every run so far, for the README ----
    b.eval("location.hash = '#/runs'").await?;
    b.wait_for(
        "document.querySelectorAll('#runs tbody tr[data-run]').length === 3",
        "the three runs",
    )
    .await?;
    b.screenshot(&shots.join("runs-all.png")).await?;

    // ---- a narrow window ----
    b.resize(400, 800).await?;
    open_run(b, &run).await?;
    b.wait_for("document.querySelector('#log-end')", "the run page, narrow")
        .await?;
    let widths = b
        .eval("[document.documentElement.scrollWidth, window.innerWidth]")
        .await?;
    walk.narrow = Some((
        widths[0].as_u64().unwrap_or(u64::MAX),
        widths[1].as_u64().unwrap_or(0),
    ));
    b.screenshot(&shots.join("run-narrow.png")).await?;
    Ok(())
}

/// Opens a run's page and waits until it shows that run (not the page before).
async fn open_run(b: &Browser, run: &str) -> anyhow::Result<()> {
    b.eval(&format!("location.hash = '#/runs/{run}'")).await?;
    b.wait_for(
        &format!("document.title.startsWith('Run {run} ') && document.querySelector('#log')"),
        "the run's page",
    )
    .await
    .map(drop)
}

/// The walk, once it went all the way.
async fn finished() -> &'static Walk {
    let w = walk().await;
    assert!(
        w.stopped.is_none(),
        "the walk stopped: {}",
        w.stopped.as_deref().unwrap_or("")
    );
    w
}

/// A wrong token on the sign-in form shows the API's refusal.
#[tokio::test]
async fn a_wrong_token_shows_the_refusal() {
    let w = finished().await;
    let refusal = w.refusal.as_deref().unwrap_or_default();
    assert!(
        refusal.contains("refused this token") && refusal.contains("401"),
        "{refusal}"
    );
}

/// The drivers page lists the loaded drivers, ready.
#[tokio::test]
async fn the_drivers_page_lists_the_drivers_ready() {
    let w = finished().await;
    let mut drivers = w.drivers.clone();
    drivers.sort();
    assert_eq!(
        drivers,
        [
            ("sample-driver".to_string(), "ready".to_string()),
            ("test-driver".to_string(), "ready".to_string())
        ]
    );
}

/// A resource created through the API makes its run appear on the runs page, no reload.
#[tokio::test]
async fn a_new_run_appears_without_a_reload() {
    assert_eq!(finished().await.run_appeared_without_reload, Some(true));
}

/// The run page shows the sample driver's five lines with their `step` labels, in order.
#[tokio::test]
async fn the_run_page_shows_the_five_lines_with_their_labels() {
    let w = finished().await;
    let expected: Vec<(String, String)> = (1..=5)
        .map(|i| {
            (
                format!("Sample Driver Working... {i}/5"),
                format!("step={i}"),
            )
        })
        .collect();
    assert_eq!(w.lines, expected);
}

/// The lines arrive while the run goes on: the page showed fewer than five first.
#[tokio::test]
async fn the_lines_arrive_live() {
    let w = finished().await;
    assert!(
        w.line_counts.first().is_some_and(|n| *n < 5)
            && w.line_counts.windows(2).all(|p| p[0] < p[1]),
        "{:?}",
        w.line_counts
    );
}

/// After the lines: the end-of-run marker and the final status.
#[tokio::test]
async fn the_run_page_ends_with_the_final_status() {
    let w = finished().await;
    assert_eq!(w.final_status.as_deref(), Some("succeeded"));
    assert_eq!(w.end_marker.as_deref(), Some("— end of run: succeeded —"));
}

/// Clicking a line's label shows only the lines with that label.
#[tokio::test]
async fn a_label_filters_the_lines() {
    assert_eq!(finished().await.filtered, ["Sample Driver Working... 3/5"]);
}

/// A failing driver's run shows its failure kind and message.
#[tokio::test]
async fn a_failed_run_shows_its_failure_kind_and_message() {
    let w = finished().await;
    assert_eq!(
        w.failure,
        Some(("failure".to_string(), "the build broke".to_string()))
    );
}

/// A run of 10,000 lines (the log budget, then the host's two lines on stopping it) is shown
/// whole, and a label filters it.
#[tokio::test]
async fn ten_thousand_lines_are_shown_and_filtered() {
    assert_eq!(finished().await.flood, Some((10_002, 2)));
}

/// The resource pages list the types and a resource's driver results.
#[tokio::test]
async fn resources_show_types_and_driver_results() {
    let w = finished().await;
    assert_eq!(w.types, ["resource-1", "test"]);
    assert_eq!(w.driver_results, ["sample-driver"]);
}

/// The pages are reachable by keyboard: the second Tab reaches the first page link (after
/// the skip link), and Enter opens it.
#[tokio::test]
async fn the_pages_are_reachable_by_keyboard() {
    assert_eq!(
        finished().await.keyboard,
        Some(("Drivers".to_string(), "#/drivers".to_string()))
    );
}

/// At 400 px nothing is wider than the window.
#[tokio::test]
async fn a_narrow_window_needs_no_horizontal_scroll() {
    let (content, window) = finished().await.narrow.expect("measured");
    assert!(
        content <= window,
        "content {content} px in a {window} px window"
    );
}

/// No exception, no console error, no failed load but the refused sign-in's 401s.
#[tokio::test]
async fn the_page_reports_no_error() {
    let w = finished().await;
    let errors: Vec<&PageError> = w
        .errors
        .iter()
        .filter(|e| !(e.source == "network" && e.text.contains("401")))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
}

/// In NATS mode the dashboard is the drivers page alone: the one part of the API that mode
/// serves (its runs, resources and logs live in Conveyor).
#[tokio::test]
async fn nats_mode_shows_the_drivers_alone() {
    let dir = workdir(&["test-driver"]);
    let server = NatsServer::start(dir.path());
    let _conveyor = Conveyor::connect(&server.url).await;
    let host = Host::start(
        dir.path(),
        &format!("[events]\nsource = \"nats\"\nurl = \"{}\"\n", server.url),
    );
    let b = Browser::launch(1280, 900)
        .await
        .expect("a headless Chromium");
    b.goto(&host.at("/ui/")).await.expect("the dashboard");
    let seen = b
        .wait_for(
            "(rows => rows.length && [Array.from(document.querySelectorAll('#nav a')).map(a => a.textContent), rows])(Array.from(document.querySelectorAll('#drivers tbody tr')).map(r => r.dataset.driver + ' ' + r.querySelector('.status').dataset.status))",
            "the drivers page",
        )
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    b.screenshot(&artefacts().join("nats-drivers.png"))
        .await
        .expect("a screenshot");
    assert_eq!(seen, json!([["Drivers"], ["test-driver ready"]]));
    assert!(b.errors().is_empty(), "{:#?}", b.errors());
}
