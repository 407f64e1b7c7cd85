//! `gatewan bgpctl --config bgpctl.yaml`: runs the BGP EVPN speaker as a daemon. SIGHUP
//! reloads the import route targets and the desired export set from the file; SIGINT and
//! SIGTERM send every peer a Cease and stop.

use std::path::{Path, PathBuf};

use anyhow::Context;
use tokio::signal::unix::{signal, SignalKind};

use crate::bgp::config::Config;
use crate::bgp::speaker;

pub struct Options {
    pub config: PathBuf,
}

pub fn run(opts: Options) -> anyhow::Result<()> {
    let config = Config::load(&opts.config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve(config, &opts.config))
}

async fn serve(config: Config, path: &Path) -> anyhow::Result<()> {
    let sdwan = match &config.sdwan {
        Some(f) => Some(crate::bgp::sdwan::Sdwan::check(
            f,
            path.parent().unwrap_or(Path::new(".")),
        )?),
        None => None,
    };
    let exports = sdwan
        .as_ref()
        .and_then(|sd| crate::bgp::sdwan::restored_exports(sd, &config))
        .unwrap_or_else(|| config.export_set());
    let (handle, mut task) = speaker::spawn_with(config.clone(), exports).await?;
    // In the SD-WAN the orders give the export set; the loop runs beside the speaker.
    let (loop_stop, loop_stopped) = tokio::sync::oneshot::channel::<()>();
    let mut sd_loop = match sdwan {
        Some(sd) => {
            let (config, handle) = (config.clone(), handle.clone());
            Some(tokio::spawn(async move {
                crate::bgp::sdwan::run(sd, &config, handle, async {
                    let _ = loop_stopped.await;
                })
                .await
            }))
        }
        None => None,
    };
    let mut hup = signal(SignalKind::hangup()).context("SIGHUP handler")?;
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let mut usr1 = signal(SignalKind::user_defined1()).context("SIGUSR1 handler")?;
    let mut restart = false;
    let mut current = config;
    loop {
        tokio::select! {
            _ = hup.recv() => {
                match Config::load(path) {
                    Ok(new) => {
                        let restart = current.restart_needed(&new);
                        if !restart.is_empty() {
                            tracing::warn!(
                                keys = %restart.join(", "),
                                "reload: these changes take effect only after a restart (the running values stay)"
                            );
                        }
                        if let Err(e) = handle.set_import_route_targets(new.import.route_targets.clone()).await {
                            tracing::error!("reload: {e}");
                        }
                        if current.sdwan.is_some() {
                            tracing::info!(path = %path.display(), "configuration reloaded (import route targets; the orders give the exports)");
                        } else {
                            match handle.set_exports(new.export_set()).await {
                                Ok(()) => tracing::info!(path = %path.display(), "configuration reloaded"),
                                Err(e) => tracing::error!("reload: {e}"),
                            }
                        }
                        // What runs: the reloaded sections, the rest as started.
                        current.import = new.import;
                        current.export = new.export;
                    }
                    Err(e) => tracing::error!("reload refused, keeping the running configuration: {e}"),
                }
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = usr1.recv() => {
                restart = true;
                break;
            }
            res = &mut task => {
                res.context("the BGP speaker failed")?;
                anyhow::bail!("the BGP speaker stopped");
            }
            Some(res) = async { match &mut sd_loop { Some(t) => Some(t.await), None => None } } => {
                res.context("the SD-WAN loop failed")??;
                anyhow::bail!("the SD-WAN loop stopped");
            }
        }
    }
    // Leave the mesh first: the gateways and the controller stop counting on us.
    let _ = loop_stop.send(());
    if let Some(t) = sd_loop {
        let _ = t.await;
    }
    if restart {
        tracing::info!(
            "SIGUSR1: closing the sessions without a NOTIFICATION for a graceful restart"
        );
        handle.close_for_restart().await;
    } else {
        tracing::info!("stopping: sending Cease to every peer");
        handle
            .shutdown(Some("gatewan bgpctl stopping".into()))
            .await;
    }
    let _ = task.await;
    Ok(())
}
