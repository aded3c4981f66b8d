//! Spans leave over OTLP/HTTP to a real listener, share their trace ids with
//! the exemplars on /metrics, and reach child programs as TRACEPARENT.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

#[derive(Debug, Clone)]
struct ReceivedSpan {
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
}

/// A minimal OTLP/HTTP (protobuf) trace receiver.
async fn otlp_receiver() -> (String, Arc<Mutex<Vec<ReceivedSpan>>>) {
    let spans = Arc::new(Mutex::new(Vec::new()));
    let sink = spans.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: Bytes| {
            let sink = sink.clone();
            async move {
                let req = ExportTraceServiceRequest::decode(body).expect("valid OTLP protobuf");
                let mut out = sink.lock().unwrap();
                for rs in req.resource_spans {
                    for ss in rs.scope_spans {
                        for s in ss.spans {
                            out.push(ReceivedSpan {
                                name: s.name,
                                trace_id: hex::encode(s.trace_id),
                                span_id: hex::encode(s.span_id),
                                parent_span_id: hex::encode(s.parent_span_id),
                            });
                        }
                    }
                }
                ""
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), spans)
}

fn exemplar_trace_ids(openmetrics: &str, process: &str) -> Vec<String> {
    let label = format!("process=\"{process}\"");
    openmetrics
        .lines()
        .filter(|l| l.starts_with("script_manager_process_run_duration_seconds_bucket{") && l.contains(&label))
        .filter_map(|l| l.split("# {trace_id=\"").nth(1)?.split('"').next().map(String::from))
        .collect()
}

#[tokio::test]
async fn run_spans_match_exemplars_and_reach_the_child_as_traceparent() {
    let (endpoint, spans) = otlp_receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let tp_file = dir.path().join("traceparents");
    let config = format!(
        r#"
builtin_processes = false
[processes.traced]
kind = "command"
command = "sh"
args = ["-c", "echo \"$TRACEPARENT\" >> {}"]
interval_seconds = 0.5
"#,
        tp_file.display()
    );
    let svc = common::start(
        &config,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
        ],
    )
    .await;
    svc.wait_for("two runs", Duration::from_secs(10), |d| {
        d["processes"]["traced"]["metrics"]["success_count"].as_u64() >= Some(2)
    })
    .await;

    let om = svc
        .http
        .get(svc.url("/metrics"))
        .header("accept", "application/openmetrics-text")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let exemplars = exemplar_trace_ids(&om, "traced");
    assert!(!exemplars.is_empty(), "no exemplar in:\n{om}");

    let deadline = Instant::now() + Duration::from_secs(20);
    let (run, attempt) = loop {
        let got = spans.lock().unwrap().clone();
        let run = got
            .iter()
            .find(|s| s.name == "run traced" && exemplars.contains(&s.trace_id))
            .cloned();
        if let Some(run) = run {
            let attempt = got.iter().find(|s| s.parent_span_id == run.span_id).cloned();
            if let Some(attempt) = attempt {
                break (run, attempt);
            }
        }
        assert!(
            Instant::now() < deadline,
            "no exported run span with an exemplar's trace id; got {got:?}\nexemplars {exemplars:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(run.parent_span_id, "", "a run is a root span");
    assert_eq!(attempt.trace_id, run.trace_id);
    assert_eq!(attempt.name, "attempt 1");

    // The child got a W3C traceparent of its attempt span, one per run.
    let lines = std::fs::read_to_string(&tp_file).unwrap();
    let traceparents: Vec<&str> = lines.lines().collect();
    assert!(traceparents.len() >= 2);
    for tp in &traceparents {
        let parts: Vec<&str> = tp.split('-').collect();
        assert_eq!(
            (parts.len(), parts[0], parts[1].len(), parts[2].len()),
            (4, "00", 32, 16),
            "{tp}"
        );
    }
    let runs = svc.get_json("/api/script-manager/runs?process=traced&limit=1000").await;
    let run_traces: Vec<String> = runs
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["trace_id"].as_str().map(String::from))
        .collect();
    let tp_traces: Vec<String> = traceparents
        .iter()
        .map(|tp| tp.split('-').nth(1).unwrap().to_string())
        .collect();
    assert!(
        tp_traces.iter().all(|t| run_traces.contains(t)),
        "{tp_traces:?} vs {run_traces:?}"
    );
    let tp_of_run = traceparents
        .iter()
        .find(|tp| tp.contains(&run.trace_id))
        .expect("the exported run's traceparent");
    assert_eq!(
        tp_of_run.split('-').nth(2).unwrap(),
        attempt.span_id,
        "TRACEPARENT names the attempt span"
    );
}

#[tokio::test]
async fn chatty_output_is_logged_within_bounds() {
    let config = r#"
builtin_processes = false
[processes.chatty]
kind = "command"
command = "sh"
args = ["-c", "i=0; while [ $i -lt 3000 ]; do echo chatty-line-$i; i=$((i+1)); done"]
interval_seconds = 3600
max_log_lines = 5
"#;
    let svc = common::start(config, &[]).await;
    svc.wait_for("the run", Duration::from_secs(10), |d| {
        d["processes"]["chatty"]["metrics"]["success_count"] == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = svc.log();
    let logged = log.lines().filter(|l| l.contains("chatty-line-")).count();
    assert_eq!(logged, 5, "{log}");
    assert!(log.contains("dropped=2995"), "{log}");
    assert!(
        log.lines().any(|l| l.contains("chatty-line-0") && l.contains("chatty")),
        "lines are tagged with the process id"
    );
}
