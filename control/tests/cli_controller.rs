//! `gatewan controller ...` end to end, through the binary.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn gatewan(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gatewan"))
        .args(args)
        .current_dir(root())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn plan_prints_orders_and_explanation_for_the_examples() {
    let args = [
        "controller",
        "plan",
        "--policy",
        "docs/examples/policy.yaml",
        "--snapshot",
        "docs/examples/snapshot.json",
    ];
    let (ok, yaml, err) = gatewan(&args);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_yaml_ng::from_str(&yaml).unwrap();
    let (ok, json, err) = gatewan(&[&args[..], &["--json"]].concat());
    assert!(ok, "{err}");
    let j: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v, j, "YAML and JSON say the same");
    let gws = j["orders"]["gateways"].as_object().unwrap();
    assert_eq!(gws.len(), 4);
    assert!(gws
        .values()
        .all(|g| !g["remotes"].as_object().unwrap().is_empty()));
    let pairs = j["explanation"]["pairs"].as_array().unwrap();
    assert_eq!(pairs.len(), 2);
    let reasons: Vec<&str> = pairs
        .iter()
        .flat_map(|p| p["gateways"].as_array().unwrap())
        .flat_map(|g| g["tunnels"].as_array().unwrap())
        .map(|t| t["reason"].as_str().unwrap())
        .collect();
    for r in ["rank", "blackhole", "capacity_met"] {
        assert!(reasons.contains(&r), "{r} missing from {reasons:?}");
    }
}

#[test]
fn plan_names_the_bad_field_and_fails() {
    let dir = std::env::temp_dir().join(format!("gatewan-cli-plan-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("policy.yaml");
    std::fs::write(&bad, "pairs:\n  default: { sla: platinum }\n").unwrap();
    let (ok, _, err) = gatewan(&[
        "controller",
        "plan",
        "--policy",
        bad.to_str().unwrap(),
        "--snapshot",
        "docs/examples/snapshot.json",
    ]);
    assert!(!ok);
    assert!(
        err.contains("pairs.default.sla") && err.contains("platinum"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn simulate_lists_and_runs_scenarios() {
    let (ok, out, err) = gatewan(&["controller", "simulate", "list", "--json"]);
    assert!(ok, "{err}");
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(list.get("blackhole").is_some() && list.get("noisy").is_some());
    let (ok, out, err) = gatewan(&["controller", "simulate", "brownout-loss", "--json"]);
    assert!(ok, "{err}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["scenario"], "brownout-loss");
    let at: Vec<f64> = r["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["at_s"].as_f64().unwrap())
        .collect();
    assert!(at.iter().any(|t| (120.0..=135.0).contains(t)), "{at:?}");
    let (ok, _, err) = gatewan(&["controller", "simulate", "nope"]);
    assert!(!ok && err.contains("known:"), "{err}");
}
