//! The `gatewan` binary's command line: help, version, and clear errors for bad arguments.

use std::process::{Command, Output};

fn gatewan(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gatewan"))
        .args(args)
        .output()
        .expect("run gatewan")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn help_lists_the_subcommands() {
    let out = gatewan(&["--help"]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    for sub in ["doctor", "members", "xdp-watch"] {
        assert!(help.contains(sub), "--help does not mention {sub}:\n{help}");
    }
}

#[test]
fn version_is_the_crate_version() {
    let out = gatewan(&["--version"]);
    assert!(out.status.success());
    assert_eq!(
        text(&out.stdout).trim(),
        format!("gatewan {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn bad_arguments_are_usage_errors_that_name_the_problem() {
    for (args, needle) in [
        (&["no-such-command"][..], "no-such-command"),
        (&["xdp-watch"][..], "--interface"),
        (
            &["xdp-watch", "-i", "lo", "--interval", "NaN"][..],
            "--interval",
        ),
        (&["xdp-watch", "-i", "lo", "--mode", "turbo"][..], "turbo"),
        (&["--log", "x=[", "doctor"][..], "--log"),
    ] {
        let out = gatewan(args);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: usage errors exit with 2"
        );
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains(needle),
            "{args:?}: error does not name {needle}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
    }
}

#[test]
fn xdp_watch_on_a_bad_interface_fails_cleanly() {
    let out = gatewan(&["xdp-watch", "-i", "bad/name"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("bad/name") && !stderr.contains("panicked"),
        "{stderr}"
    );
}

#[test]
fn doctor_json_is_consistent() {
    let out = gatewan(&["doctor", "--json"]);
    assert!(out.status.success());
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("doctor --json is JSON");
    let available = report["af_xdp"].as_bool().expect("af_xdp is a bool");
    let missing = report["af_xdp_missing"]
        .as_array()
        .expect("af_xdp_missing is a list");
    assert_eq!(available, missing.is_empty());
    assert_eq!(
        report["backend"],
        if available { "af_xdp" } else { "udp-socket" }
    );
}
