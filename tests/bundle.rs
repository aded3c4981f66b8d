//! The operations bundle, checked by the real tools: promtool (config, rules,
//! rule unit tests), amtool, a Compose parser; and the conventions of alerts,
//! runbooks and dashboards.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn run(tool: &str, args: &[&str]) -> String {
    let out = Command::new(tool)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap_or_else(|e| panic!("{tool} is needed (scripts/test installs it): {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{tool} {args:?} failed:\n{text}");
    text
}

#[test]
fn promtool_accepts_the_configuration_and_the_rules_and_their_tests_pass() {
    run("promtool", &["check", "config", "prometheus.yml"]);
    run("promtool", &["check", "rules", "alerts/script-manager.rules.yml"]);
    let out = run("promtool", &["test", "rules", "alerts/script-manager.rules.test.yml"]);
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn amtool_accepts_the_alertmanager_configuration() {
    run("amtool", &["check-config", "alertmanager.yml"]);
}

/// (alert name, the rule's text) for each alert.
fn alerts() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(repo("alerts/script-manager.rules.yml")).unwrap();
    let mut out = Vec::new();
    for chunk in text.split("- alert: ").skip(1) {
        let name = chunk.lines().next().unwrap().trim().to_string();
        out.push((name, chunk.to_string()));
    }
    out
}

#[test]
fn every_alert_has_severity_annotations_a_runbook_and_a_unit_test() {
    let runbooks = std::fs::read_to_string(repo("docs/runbooks.md")).unwrap();
    let tests = std::fs::read_to_string(repo("alerts/script-manager.rules.test.yml")).unwrap();
    let alerts = alerts();
    assert!(alerts.len() >= 15);
    for (name, rule) in &alerts {
        assert!(
            rule.contains("severity: warning") || rule.contains("severity: critical"),
            "{name}: severity"
        );
        for annotation in ["summary:", "description:", "runbook_url:"] {
            assert!(rule.contains(annotation), "{name}: {annotation}");
        }
        let anchor = format!("/docs/runbooks#{}", name.to_lowercase());
        assert!(rule.contains(&anchor), "{name}: runbook_url should end in {anchor}");
        assert!(
            runbooks.contains(&format!("\n## {name}\n")),
            "{name}: no section in docs/runbooks.md"
        );
        assert!(tests.contains(&format!("alertname: {name}\n")), "{name}: no unit test");
    }
}

#[test]
fn the_compose_file_parses_and_everything_it_mounts_exists() {
    run("docker-compose", &["-f", "docker-compose.yml", "config", "-q"]);
    let compose = std::fs::read_to_string(repo("docker-compose.yml")).unwrap();
    let mut mounts = 0;
    for line in compose.lines() {
        let line = line.trim().trim_start_matches("- ");
        if let Some(rest) = line.strip_prefix("./") {
            let path = rest.split(':').next().unwrap();
            assert!(
                repo(path).exists(),
                "docker-compose.yml mounts ./{path}, which does not exist"
            );
            mounts += 1;
        }
    }
    assert!(mounts >= 6, "{mounts} mounts");
    for image in compose.lines().filter_map(|l| l.trim().strip_prefix("image: ")) {
        assert!(
            image.contains(':') && !image.ends_with(":latest"),
            "image {image} is not pinned"
        );
    }
    let dockerfile = std::fs::read_to_string(repo("Dockerfile")).unwrap();
    for line in dockerfile
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
    {
        let parts: Vec<&str> = line.split_whitespace().collect();
        for source in &parts[1..parts.len() - 1] {
            assert!(
                repo(source).exists(),
                "Dockerfile copies {source}, which does not exist"
            );
        }
    }
    assert!(dockerfile.contains("\nUSER "), "the image runs as a non-root user");
}

#[test]
fn dashboards_follow_the_conventions() {
    let mut uids = Vec::new();
    for name in ["overview", "process", "trading", "streams"] {
        let d: Value =
            serde_json::from_str(&std::fs::read_to_string(repo(&format!("grafana/dashboards/{name}.json"))).unwrap())
                .unwrap();
        uids.push(d["uid"].as_str().unwrap().to_string());
        let vars = d["templating"]["list"].as_array().unwrap();
        assert!(
            vars.iter()
                .any(|v| v["name"] == "datasource" && v["type"] == "datasource"),
            "{name}: datasource variable"
        );
        for p in d["panels"].as_array().unwrap() {
            let title = p["title"].as_str().unwrap();
            assert!(
                p["description"].as_str().is_some_and(|s| s.len() > 10),
                "{name}/{title}: description"
            );
            assert!(
                p["fieldConfig"]["defaults"]["unit"].as_str().is_some(),
                "{name}/{title}: unit"
            );
            assert_eq!(
                p["datasource"]["uid"], "${datasource}",
                "{name}/{title}: datasource variable"
            );
            for t in p["targets"].as_array().unwrap() {
                let expr = t["expr"].as_str().unwrap();
                if expr.contains("rate(") || expr.contains("increase(") {
                    assert!(
                        expr.contains("[$__rate_interval]"),
                        "{name}/{title}: use $__rate_interval in {expr}"
                    );
                }
                if expr.contains("_seconds_bucket")
                    && (title.contains("latency")
                        || title.contains("duration")
                        || title.contains("Duration")
                        || title.contains("lag"))
                {
                    assert_eq!(t["exemplar"], true, "{name}/{title}: exemplars on latency panels");
                }
            }
        }
        if name == "process" {
            assert!(
                vars.iter().any(|v| v["name"] == "process"),
                "process dashboard has a $process variable"
            );
        }
    }
    assert_eq!(
        uids,
        [
            "script-manager-overview",
            "script-manager-process",
            "script-manager-trading",
            "script-manager-streams"
        ]
    );
    let ds = std::fs::read_to_string(repo("grafana/provisioning/datasources/datasources.yml")).unwrap();
    assert!(ds.contains("uid: prometheus") && ds.contains("exemplarTraceIdDestinations") && ds.contains("type: tempo"));
}
