//! Builds the XDP program in `ebpf/xdp` with its pinned nightly and bpf-linker and hands the
//! object to the crate, or records why it could not so the binary can say so at run time.
//! A machine without the eBPF toolchain still builds gatewan; `GATEWAN_REQUIRE_EBPF=1`
//! (set by `cargo xtask test`) turns a missing object into a build error instead.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const TOOLCHAIN: &str = "nightly-2026-05-20";

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo"));
    let ebpf_dir = manifest_dir.join("../ebpf");
    for watched in [
        "xdp/src",
        "xdp/Cargo.toml",
        "xdp/Cargo.lock",
        "common/src",
        "common/Cargo.toml",
    ] {
        println!(
            "cargo::rerun-if-changed={}",
            ebpf_dir.join(watched).display()
        );
    }
    println!("cargo::rerun-if-env-changed=GATEWAN_REQUIRE_EBPF");
    println!("cargo::rerun-if-env-changed=GATEWAN_NO_EBPF");
    println!("cargo::rustc-check-cfg=cfg(gatewan_ebpf)");

    let object = out_dir.join("gatewan-xdp.o");
    let reason = out_dir.join("ebpf-unavailable.txt");
    let _ = fs::remove_file(&object);
    match build(&ebpf_dir.join("xdp"), &manifest_dir.join("../target/ebpf")) {
        Ok(built) => {
            fs::copy(&built, &object).expect("copy the XDP object into OUT_DIR");
            fs::write(&reason, "").expect("write OUT_DIR");
            println!("cargo::rustc-cfg=gatewan_ebpf");
        }
        Err(why) => {
            if env::var_os("GATEWAN_REQUIRE_EBPF").is_some_and(|v| v == "1") {
                panic!("GATEWAN_REQUIRE_EBPF=1 but the XDP program did not build: {why}");
            }
            println!("cargo::warning=XDP program not embedded, AF_XDP will be unavailable: {why}");
            fs::write(&reason, why).expect("write OUT_DIR");
        }
    }
}

fn build(crate_dir: &Path, target_dir: &Path) -> Result<PathBuf, String> {
    if env::var_os("GATEWAN_NO_EBPF").is_some() {
        return Err("built with GATEWAN_NO_EBPF set".into());
    }
    let probe = Command::new("rustup")
        .args(["run", TOOLCHAIN, "rustc", "--version"])
        .output();
    match probe {
        Ok(out) if out.status.success() => {}
        Ok(_) => {
            return Err(format!(
                "the pinned toolchain {TOOLCHAIN} is not installed (run `cargo xtask setup`)"
            ))
        }
        Err(e) => {
            return Err(format!(
                "rustup is not available ({e}); the eBPF build needs {TOOLCHAIN}"
            ))
        }
    }
    if Command::new("bpf-linker")
        .arg("--version")
        .output()
        .is_err()
    {
        return Err("bpf-linker is not installed (run `cargo xtask setup`)".into());
    }
    // A clean environment: the outer stable cargo's settings must not leak into the nightly build.
    let mut cmd = Command::new("rustup");
    cmd.args([
        "run",
        TOOLCHAIN,
        "cargo",
        "build",
        "--release",
        "--locked",
        "--target-dir",
    ])
    .arg(target_dir)
    .current_dir(crate_dir);
    for (key, _) in env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        let keep = matches!(
            key.as_str(),
            "CARGO_HOME" | "RUSTUP_HOME" | "CARGO_NET_OFFLINE"
        );
        if !keep && (key.starts_with("CARGO") || key.starts_with("RUST")) {
            cmd.env_remove(&key);
        }
    }
    let out = cmd
        .output()
        .map_err(|e| format!("could not run the eBPF build: {e}"))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(15).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(format!("the eBPF build failed:\n{}", tail.join("\n")));
    }
    let built = target_dir.join("bpfel-unknown-none/release/gatewan-xdp");
    if built.is_file() {
        Ok(built)
    } else {
        Err(format!(
            "the eBPF build did not produce {}",
            built.display()
        ))
    }
}
