//! `gatewan pki`: the deployment's CA and the members' certificates for the orders channel
//! (docs/controller.md, "Provisioning").

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::channel::{pki, Identity, MemberRole};

#[derive(Debug, Args)]
pub struct PkiArgs {
    #[command(subcommand)]
    command: PkiCommand,
}

#[derive(Debug, Subcommand)]
enum PkiCommand {
    /// Make the deployment's CA: DIR/ca.pem (give to every member) and DIR/ca.key (keep
    /// offline; it signs members in).
    Init {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 3650)]
        days: u32,
    },
    /// Issue a member's certificate and key (OUT/NAME.ROLE.pem, OUT/NAME.ROLE.key).
    Issue {
        /// The CA's directory (`pki init --dir`).
        #[arg(long)]
        ca: PathBuf,
        /// gateway, controller, bgpctl or operator.
        #[arg(long)]
        role: String,
        /// The member's name: a gateway's or controller's `name`, a datacenter for bgpctl.
        #[arg(long)]
        name: String,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 825)]
        days: u32,
    },
}

pub fn run(args: PkiArgs) -> anyhow::Result<()> {
    match args.command {
        PkiCommand::Init { dir, days } => {
            let (cert, key) = pki::init(&dir, days)?;
            println!(
                "CA certificate {}\nCA key         {}",
                cert.display(),
                key.display()
            );
        }
        PkiCommand::Issue {
            ca,
            role,
            name,
            out,
            days,
        } => {
            let identity = Identity::new(role.parse::<MemberRole>()?, &name)?;
            let (cert, key) = pki::issue(&ca, &identity, &out, days)?;
            println!(
                "{identity} ({})\ncertificate {}\nkey         {}",
                identity.dns_name(),
                cert.display(),
                key.display()
            );
        }
    }
    Ok(())
}
