//! `cargo xtask simulate SCENARIO [--seed N] [--json] [--snapshot-at T]`: runs one of the
//! controller's simulator scenarios (`list` lists them). xtask does not link gatewan's crates,
//! so this runs `gatewan controller simulate` through cargo.

use std::process::Command;

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    crate::run_cmd(
        Command::new(cargo)
            .args([
                "run",
                "-q",
                "-p",
                "gatewan-control",
                "--bin",
                "gatewan",
                "--",
            ])
            .args(["controller", "simulate"])
            .args(args),
    )
}
