//! `gatewan status`: every tunnel of the running gateway, in the layout of the design brief
//! (YAML by default, `--json` for scripts), read from its local control endpoint.

use std::path::Path;

use anyhow::Context;

use crate::gateway::control::{self, Request, Response};

/// `gateway`: print the gateway itself (backend, workers, gateway-wide counters) instead of
/// its tunnels.
pub fn run(socket: &Path, json: bool, gateway: bool) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let response = runtime
        .block_on(control::request(socket, &Request::Status))
        .with_context(|| {
            format!(
                "asking the gateway at {} (is `gatewan gateway` running?)",
                socket.display()
            )
        })?;
    let Response::Status {
        gateway: name,
        datacenter,
        tunnels,
        drops,
        dataplane,
    } = response
    else {
        anyhow::bail!("the gateway answered something other than a status");
    };
    if gateway {
        let summary = serde_json::json!({
            "gateway": name,
            "datacenter": datacenter,
            "dataplane": dataplane,
            "tunnels": tunnels.len(),
            "counters": drops,
        });
        if json {
            println!("{}", serde_json::to_string_pretty(&summary)?);
        } else {
            print!("{}", serde_yaml_ng::to_string(&summary)?);
        }
        return Ok(());
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&tunnels)?);
    } else {
        print!("{}", serde_yaml_ng::to_string(&tunnels)?);
    }
    Ok(())
}

/// `gatewan rekey TUNNEL`: starts a new handshake on a tunnel now.
pub fn rekey(socket: &Path, tunnel: &str) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime
        .block_on(control::request::<_, Response>(
            socket,
            &Request::Rekey {
                tunnel: tunnel.to_owned(),
            },
        ))
        .with_context(|| {
            format!(
                "asking the gateway at {} to rekey {tunnel}",
                socket.display()
            )
        })?;
    println!("rekey of {tunnel} started");
    Ok(())
}

/// `gatewan orders`: the controller's order in force at the running gateway (version,
/// epoch, age, weights per remote datacenter) and what local repair holds out.
pub fn orders(socket: &Path, json: bool) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let response: Response = runtime
        .block_on(control::request(socket, &Request::Orders))
        .with_context(|| format!("asking the gateway at {}", socket.display()))?;
    let Response::Orders {
        orders,
        local_routes,
    } = response
    else {
        anyhow::bail!("the gateway answered something other than its orders");
    };
    #[derive(serde::Serialize)]
    struct Shown {
        #[serde(flatten)]
        orders: crate::gateway::orders::OrderStatus,
        local_routes: crate::gateway::local_routes::LocalRoutesStatus,
    }
    let shown = Shown {
        orders,
        local_routes,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&shown)?);
    } else {
        print!("{}", serde_yaml_ng::to_string(&shown)?);
    }
    Ok(())
}
