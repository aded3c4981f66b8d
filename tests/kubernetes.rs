//! The Kubernetes manifests (deploy/kubernetes), checked by the real tools:
//! `kubectl kustomize` builds every variant, kubernetes-validate checks the
//! core objects against the Kubernetes schema, promtool the PrometheusRule;
//! the generated files are current and the ServiceMonitor, Service, pods and
//! Secret agree with each other (scripts/check-kubernetes.py).

use std::process::Command;

#[test]
fn the_manifests_build_validate_and_agree_with_the_service() {
    let out = Command::new("python3")
        .arg("scripts/check-kubernetes.py")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap_or_else(|e| panic!("python3 is needed (scripts/test installs it): {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "scripts/check-kubernetes.py failed:\n{text}");
    for checked in [
        "base: 3 core objects valid",
        "ha: 4 core objects valid",
        "SUCCESS",
        "all Kubernetes checks passed",
    ] {
        assert!(text.contains(checked), "`{checked}` missing from:\n{text}");
    }
}
