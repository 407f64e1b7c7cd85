//! The subcommands of the `gatewan` binary.

pub mod bgpctl;
pub mod controller;
pub mod doctor;
pub mod gateway;
pub mod members;
pub mod pki;
pub mod routes;
pub mod status;
pub mod xdp_watch;

/// An error and its causes on one line, `a: b: c`, leaving out a cause whose text the
/// message before it already shows (errors that name their source in their own text).
pub fn error_line(e: &anyhow::Error) -> String {
    let mut line = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
    }
    line
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_cause_already_in_the_message_is_not_repeated() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let e = anyhow::Error::new(crate::bgp::control::ClientError::Connect {
            path: "/run/x.sock".into(),
            source: io,
        })
        .context("asking bgpctl");
        let line = super::error_line(&e);
        assert_eq!(line.matches("no such file").count(), 1, "{line}");
        assert!(
            line.starts_with("asking bgpctl: connecting to /run/x.sock"),
            "{line}"
        );
        let plain = anyhow::anyhow!("inner").context("outer");
        assert_eq!(super::error_line(&plain), "outer: inner");
    }
}
