//! `gatewan gateway --config gateway.yaml`: runs a gateway until SIGINT or SIGTERM.

use std::path::Path;

use anyhow::Context;

use crate::gateway::config::GatewayConfig;
use crate::gateway::runtime;

pub fn run(config: &Path) -> anyhow::Result<()> {
    let config = GatewayConfig::load(config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("gatewan-gw")
        .build()
        .context("starting the runtime")?;
    runtime.block_on(runtime::run(config))?;
    Ok(())
}
