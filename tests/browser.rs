//! examples/live.html in a real browser (issue 25): headless Chromium, driven
//! by Playwright (tests/browser/live.py), loads the page against the real
//! service on the simulator and sees a price change and a level's status
//! change on the page, pushed by the event stream. Needs Debian's
//! `chromium` and Playwright's Python package (scripts/test installs both);
//! without them this test fails, it does not skip.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::trading::{create_level_near, cross};
use common::{Backend, SimProcess, TestStore};

/// A trade-scope token, as a screen would be given (reads stay open for the test's helpers).
const SCREEN: &str = "screen-token-0123456789abcdef";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_screen_shows_prices_and_a_level_changing_live() {
    let sim = SimProcess::start("").await;
    let store = TestStore::new(Backend::Sqlite);
    let config = format!(
        "{}\n{}\n[http]\nadmin_token = \"{}\"\n[[http.tokens]]\nname = \"screen\"\nscope = \"trade\"\ntoken = \"{SCREEN}\"\n",
        common::trading::FAST,
        sim.exchange_toml(),
        common::TOKEN
    );
    let svc = common::start(&config, &[("SCRIPT_MANAGER_STORE__URL", &store.url)]).await;
    let (id, symbol, amount, sl) = create_level_near(&svc, &sim, "main").await;

    let mut browser = Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser/live.py"))
        .args([&svc.base, SCREEN, &symbol, &id.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 (scripts/test installs it, with Playwright and chromium)");
    let (lines_tx, lines) = mpsc::channel::<String>();
    let stdout = browser.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let next = |what: &str| {
        lines
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_else(|_| panic!("the browser never said {what}"))
    };
    let said = next("the level is armed and the price moved");
    assert!(said.starts_with("ARMED "), "the page: {said}");

    cross(&sim, &symbol, amount, sl).await;
    writeln!(browser.stdin.as_mut().unwrap()).unwrap();
    let said = next("the level is executed");
    let status = browser.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut browser.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(said, "EXECUTED", "the page: {said}\n{stderr}");
    assert!(status.success(), "live.py: {status}\n{stderr}");
    assert!(
        !svc.log().contains(SCREEN),
        "the token in the page's URL reached the log"
    );
}
