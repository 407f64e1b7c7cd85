//! The BGP-4 session state machine (RFC 4271 section 8), sans I/O.
//!
//! A [`Session`] is fed events ([`Event`]: start, stop, TCP up or down, received bytes) and
//! the current time, and answers with [`Output`]s to carry out: open a connection, send
//! bytes, close, and what happened (Established, Down, a decoded UPDATE). Time only moves when
//! the caller passes it in, and [`Session::next_deadline`] says when the caller must call
//! [`Session::on_timer`] next, so tests drive the machine through hours of simulated time
//! without sleeping. The tokio adapter in [`super::speaker`] owns the sockets.
//!
//! States and timers follow RFC 4271: Idle, Connect, Active, OpenSent, OpenConfirm,
//! Established; ConnectRetry, Hold (4 minutes until the OPENs are exchanged) and Keepalive
//! (a third of the negotiated hold time). After an error the session waits in Idle and
//! starts again on its own (RFC 4271's automatic start with peer oscillation damping): each
//! failed attempt doubles the wait, up to a maximum, and a session that stayed Established
//! for at least that maximum starts again from the initial wait.

use std::collections::VecDeque;
use std::fmt;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use super::wire::notification::{cease_subcode, code, fsm_subcode};
use super::wire::open::{Negotiated, Open};
use super::wire::update::{self, Context, Decoded};
use super::wire::{self, MessageType, MessageView, Notification, RouteRefresh};

/// The hold timer while waiting for the peer's OPEN (RFC 4271 section 8.2.2 suggests 4 min).
pub const OPEN_HOLD: Duration = Duration::from_secs(240);

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionConfig {
    pub local_as: u32,
    pub local_id: Ipv4Addr,
    pub peer_as: u32,
    /// Hold time we offer, in seconds (0, or 3 and more).
    pub hold_time: u16,
    /// Never connect; wait for the peer to connect.
    pub passive: bool,
    /// First ConnectRetry / automatic restart wait; doubled after each failure.
    pub connect_retry: Duration,
    /// The most the wait grows to.
    pub connect_retry_max: Duration,
    /// Offer graceful restart for EVPN with this restart time, seconds (RFC 4724).
    pub graceful_restart: Option<u16>,
}

impl SessionConfig {
    pub fn ibgp(&self) -> bool {
        self.local_as == self.peer_as
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum State {
    Idle,
    Connect,
    Active,
    OpenSent,
    OpenConfirm,
    Established,
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// What happens to the session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// Start (ManualStart; ManualStart with passive TCP establishment when configured).
    Start,
    /// Stop with an optional shutdown communication (RFC 9003); no automatic restart.
    Stop(Option<&'a str>),
    /// Close the connection without a NOTIFICATION, so that a peer doing graceful restart
    /// keeps our routes while we restart (RFC 4724 section 4.2); no automatic restart.
    Abandon,
    /// The TCP connection is up (our connect succeeded, or we accepted the peer's).
    TcpConnected,
    /// Our connect attempt failed, or the connection closed or broke.
    TcpFailed,
    /// Bytes received on the connection.
    Bytes(&'a [u8]),
}

/// What the caller must do or learn.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Open a TCP connection to the peer.
    Connect,
    /// Write these bytes to the connection.
    Send(Vec<u8>),
    /// Close the connection (after writing what was sent before).
    Disconnect,
    /// The session is Established: send the peer our routes.
    Established(Negotiated),
    /// The session left Established: forget the peer's routes and what we sent it.
    Down(String),
    /// An UPDATE received while Established, after RFC 7606 handling.
    Update(Decoded),
    /// The peer asks for our routes again (RFC 2918).
    RouteRefresh(RouteRefresh),
}

/// Counters kept per session, shown by `gatewan routes`.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Stats {
    pub messages_in: u64,
    pub messages_out: u64,
    pub updates_in: u64,
    pub updates_out: u64,
    pub keepalives_in: u64,
    pub keepalives_out: u64,
    pub notifications_in: u64,
    pub notifications_out: u64,
    pub route_refresh_in: u64,
    /// RFC 7606 outcomes of received UPDATEs.
    pub updates_treat_as_withdraw: u64,
    pub attributes_discarded: u64,
    pub update_session_resets: u64,
    /// RT-5 NLRI whose length or fields are wrong, dropped alone (their framing held).
    #[serde(default)]
    pub malformed_nlri: u64,
    /// Times the session reached Established.
    pub established_count: u64,
    /// Connection attempts that failed before Established.
    pub failed_attempts: u64,
    pub last_error: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Timer {
    ConnectRetry,
    Hold,
    Keepalive,
    AutoStart,
}

pub struct Session {
    config: SessionConfig,
    state: State,
    ours: Open,
    negotiated: Option<Negotiated>,
    /// Whether the session restarts on its own after an error (cleared by Stop).
    auto_start: bool,
    backoff: Duration,
    connect_retry_at: Option<Instant>,
    hold_at: Option<Instant>,
    keepalive_at: Option<Instant>,
    auto_start_at: Option<Instant>,
    established_at: Option<Instant>,
    rx: Vec<u8>,
    out: VecDeque<Output>,
    stats: Stats,
}

impl Session {
    pub fn new(config: SessionConfig) -> Self {
        let mut ours = Open::ours(config.local_as, config.hold_time, config.local_id);
        if let Some(t) = config.graceful_restart {
            ours = ours.with_graceful_restart(t);
        }
        Self {
            backoff: config.connect_retry,
            config,
            state: State::Idle,
            ours,
            negotiated: None,
            auto_start: false,
            connect_retry_at: None,
            hold_at: None,
            keepalive_at: None,
            auto_start_at: None,
            established_at: None,
            rx: Vec::new(),
            out: VecDeque::new(),
            stats: Stats::default(),
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// What the OPENs agreed, from OpenConfirm on.
    pub fn negotiated(&self) -> Option<&Negotiated> {
        self.negotiated.as_ref()
    }

    pub fn established_since(&self) -> Option<Instant> {
        self.established_at
    }

    /// Decoding context of UPDATEs on this session.
    pub fn context(&self) -> Context {
        Context {
            four_octet_as: self.negotiated.as_ref().is_some_and(|n| n.four_octet_as),
            ibgp: self.config.ibgp(),
        }
    }

    /// The next output to carry out, in order.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// The earliest time [`Session::on_timer`] has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        [
            self.connect_retry_at,
            self.hold_at,
            self.keepalive_at,
            self.auto_start_at,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Queues an UPDATE (a whole message) for the peer. Only sent while Established;
    /// returns whether it was.
    pub fn send_update(&mut self, now: Instant, msg: Vec<u8>) -> bool {
        if self.state != State::Established {
            return false;
        }
        self.stats.updates_out += 1;
        self.send(msg);
        // RFC 4271 section 4.4: an UPDATE restarts the KeepaliveTimer like a KEEPALIVE does.
        self.restart_keepalive(now);
        true
    }

    /// Asks the peer to send its EVPN routes again.
    pub fn send_route_refresh(&mut self) -> bool {
        if self.state != State::Established
            || !self.negotiated.as_ref().is_some_and(|n| n.route_refresh)
        {
            return false;
        }
        self.send(
            RouteRefresh {
                afi: wire::AFI_L2VPN,
                subtype: 0,
                safi: wire::SAFI_EVPN,
            }
            .encode(),
        );
        true
    }

    pub fn handle(&mut self, now: Instant, event: Event<'_>) {
        match event {
            Event::Start => self.start(now),
            Event::Stop(message) => self.stop(message),
            Event::Abandon => {
                self.auto_start = false;
                self.auto_start_at = None;
                self.enter_idle("closed for a graceful restart".into());
            }
            Event::TcpConnected => self.tcp_connected(now),
            Event::TcpFailed => self.tcp_failed(now),
            Event::Bytes(bytes) => self.bytes(now, bytes),
        }
    }

    /// Runs the timers that are due.
    pub fn on_timer(&mut self, now: Instant) {
        // Fire at most one timer per loop turn, earliest first, re-reading after each since
        // one timer can clear others.
        while let Some((timer, at)) = self.due_timer() {
            if at > now {
                break;
            }
            match timer {
                Timer::AutoStart => {
                    self.auto_start_at = None;
                    self.start(now);
                }
                Timer::ConnectRetry => {
                    self.connect_retry_at = None;
                    self.connect_retry_expired(now);
                }
                Timer::Hold => {
                    self.hold_at = None;
                    self.error(
                        now,
                        Notification::new(code::HOLD_TIMER_EXPIRED, 0),
                        "hold timer expired",
                    );
                }
                Timer::Keepalive => {
                    self.keepalive_at = None;
                    if matches!(self.state, State::OpenConfirm | State::Established) {
                        self.send_keepalive(now);
                    }
                }
            }
        }
    }

    fn due_timer(&self) -> Option<(Timer, Instant)> {
        [
            (Timer::AutoStart, self.auto_start_at),
            (Timer::ConnectRetry, self.connect_retry_at),
            (Timer::Hold, self.hold_at),
            (Timer::Keepalive, self.keepalive_at),
        ]
        .into_iter()
        .filter_map(|(t, at)| at.map(|at| (t, at)))
        .min_by_key(|&(_, at)| at)
    }

    fn start(&mut self, now: Instant) {
        self.auto_start = true;
        self.auto_start_at = None;
        if self.state != State::Idle {
            return;
        }
        if self.config.passive {
            self.state = State::Active;
        } else {
            self.state = State::Connect;
            self.connect_retry_at = Some(now + self.backoff);
            self.out.push_back(Output::Connect);
        }
    }

    fn stop(&mut self, message: Option<&str>) {
        self.auto_start = false;
        self.auto_start_at = None;
        if matches!(
            self.state,
            State::OpenSent | State::OpenConfirm | State::Established
        ) {
            let n = match message {
                Some(m) => Notification::shutdown(m),
                None => Notification::new(code::CEASE, cease_subcode::ADMINISTRATIVE_SHUTDOWN),
            };
            self.send_notification(&n);
        }
        self.enter_idle("stopped by the operator".into());
    }

    fn tcp_connected(&mut self, now: Instant) {
        match self.state {
            State::Connect | State::Active => {
                self.connect_retry_at = None;
                self.rx.clear();
                self.send(self.ours.encode());
                self.hold_at = Some(now + OPEN_HOLD);
                self.state = State::OpenSent;
            }
            // A connection the session did not ask for: the adapter resolves collisions
            // before telling the session, so refuse it.
            _ => self.out.push_back(Output::Disconnect),
        }
    }

    fn tcp_failed(&mut self, now: Instant) {
        match self.state {
            State::Idle => {}
            State::Connect | State::Active | State::OpenSent => {
                // RFC 4271: back to Active, retry when ConnectRetryTimer expires.
                self.stats.failed_attempts += 1;
                self.stats.last_error = Some("connection failed".into());
                self.grow_backoff();
                self.hold_at = None;
                self.keepalive_at = None;
                self.rx.clear();
                self.state = State::Active;
                if !self.config.passive {
                    self.connect_retry_at = Some(now + self.backoff);
                }
            }
            State::OpenConfirm | State::Established => {
                self.fail(now, "connection closed by the peer or broken".into());
            }
        }
    }

    fn connect_retry_expired(&mut self, now: Instant) {
        match self.state {
            State::Connect => {
                // The attempt hangs: drop it and try again.
                self.stats.failed_attempts += 1;
                self.grow_backoff();
                self.out.push_back(Output::Disconnect);
                self.out.push_back(Output::Connect);
                self.connect_retry_at = Some(now + self.backoff);
            }
            State::Active if !self.config.passive => {
                self.state = State::Connect;
                self.out.push_back(Output::Connect);
                self.connect_retry_at = Some(now + self.backoff);
            }
            _ => {}
        }
    }

    fn bytes(&mut self, now: Instant, bytes: &[u8]) {
        if !matches!(
            self.state,
            State::OpenSent | State::OpenConfirm | State::Established
        ) {
            return;
        }
        self.rx.extend_from_slice(bytes);
        let mut used = 0;
        loop {
            let buf = self.rx.get(used..).unwrap_or_default();
            match MessageView::parse(buf) {
                Ok(None) => break,
                Ok(Some((view, len))) => {
                    used += len;
                    let body = view.body.to_vec();
                    self.message(now, view.kind, &body);
                    if !matches!(
                        self.state,
                        State::OpenSent | State::OpenConfirm | State::Established
                    ) {
                        // The connection is gone; so is whatever followed on it.
                        self.rx.clear();
                        return;
                    }
                }
                Err(e) => {
                    let n = e.notification();
                    self.error(now, n, &format!("message header error: {e}"));
                    self.rx.clear();
                    return;
                }
            }
        }
        self.rx.drain(..used.min(self.rx.len()));
    }

    fn message(&mut self, now: Instant, kind: MessageType, body: &[u8]) {
        self.stats.messages_in += 1;
        match kind {
            MessageType::Notification => {
                self.stats.notifications_in += 1;
                let n = Notification::decode(body);
                let why = format!("NOTIFICATION received: {n}");
                tracing::warn!(peer_as = self.config.peer_as, "{why}");
                self.fail(now, why);
                return;
            }
            MessageType::Keepalive => self.stats.keepalives_in += 1,
            MessageType::Update => self.stats.updates_in += 1,
            MessageType::RouteRefresh => self.stats.route_refresh_in += 1,
            MessageType::Open => {}
        }
        match (self.state, kind) {
            (State::OpenSent, MessageType::Open) => self.open_received(now, body),
            (State::OpenConfirm, MessageType::Keepalive) => {
                self.restart_hold(now);
                self.state = State::Established;
                self.established_at = Some(now);
                self.stats.established_count += 1;
                self.stats.last_error = None;
                if let Some(n) = self.negotiated.clone() {
                    self.out.push_back(Output::Established(n));
                }
            }
            (State::Established, MessageType::Keepalive) => self.restart_hold(now),
            (State::Established, MessageType::Update) => {
                self.restart_hold(now);
                self.update_received(now, body);
            }
            (State::Established, MessageType::RouteRefresh) => {
                self.restart_hold(now);
                match RouteRefresh::decode(body) {
                    Ok(rr) if rr.afi == wire::AFI_L2VPN && rr.safi == wire::SAFI_EVPN => {
                        self.out.push_back(Output::RouteRefresh(rr));
                    }
                    // Another family, or RFC 7313 markers: nothing to resend.
                    Ok(_) => {}
                    Err(n) => self.error(now, n, "malformed ROUTE-REFRESH"),
                }
            }
            (state, kind) => {
                let subcode = match state {
                    State::OpenSent => fsm_subcode::UNEXPECTED_IN_OPEN_SENT,
                    State::OpenConfirm => fsm_subcode::UNEXPECTED_IN_OPEN_CONFIRM,
                    State::Established => fsm_subcode::UNEXPECTED_IN_ESTABLISHED,
                    _ => fsm_subcode::UNSPECIFIED,
                };
                // RFC 6608: the data is the type of the unexpected message.
                let n = Notification::with_data(code::FSM, subcode, vec![kind as u8]);
                self.error(now, n, &format!("unexpected {kind:?} in {state}"));
            }
        }
    }

    fn open_received(&mut self, now: Instant, body: &[u8]) {
        let negotiated =
            Open::decode(body).and_then(|open| open.negotiate(&self.ours, self.config.peer_as));
        match negotiated {
            Err(n) => {
                let why = format!("bad OPEN: {n}");
                self.error(now, n, &why);
            }
            Ok(neg) => {
                self.send_keepalive(now);
                self.hold_at = None;
                self.keepalive_at = None;
                if neg.hold_time > 0 {
                    self.hold_at = Some(now + Duration::from_secs(u64::from(neg.hold_time)));
                    self.keepalive_at = Some(now + keepalive_interval(neg.hold_time));
                }
                self.negotiated = Some(neg);
                self.state = State::OpenConfirm;
            }
        }
    }

    fn update_received(&mut self, now: Instant, body: &[u8]) {
        match update::decode(body, self.context()) {
            Err(reset) => {
                self.stats.update_session_resets += 1;
                tracing::warn!(
                    peer_as = self.config.peer_as,
                    update = %hex::encode(body),
                    "malformed UPDATE, session reset (RFC 7606): {}",
                    reset.reason
                );
                let why = format!("malformed UPDATE: {}", reset.reason);
                self.error(now, reset.notification, &why);
            }
            Ok(decoded) => {
                if !decoded.errors.is_empty() {
                    self.stats.attributes_discarded += decoded
                        .errors
                        .iter()
                        .filter(|e| e.approach == update::Approach::AttributeDiscard)
                        .count() as u64;
                    if decoded.treat_as_withdraw {
                        self.stats.updates_treat_as_withdraw += 1;
                    }
                    // RFC 7606 section 6: log the error and the whole UPDATE.
                    for e in &decoded.errors {
                        tracing::warn!(
                            peer_as = self.config.peer_as,
                            attribute = e.type_code,
                            approach = %e.approach,
                            update = %hex::encode(body),
                            "malformed UPDATE: {}",
                            e.reason
                        );
                        self.stats.last_error =
                            Some(format!("malformed UPDATE ({}): {}", e.approach, e.reason));
                    }
                }
                self.malformed_nlri(&decoded, body);
                self.out.push_back(Output::Update(decoded));
            }
        }
    }

    /// Counts and logs the RT-5 NLRI of an UPDATE that were dropped as malformed.
    fn malformed_nlri(&mut self, decoded: &update::Decoded, body: &[u8]) {
        let reach = decoded.update.mp_reach().map(|m| m.nlri.evpn());
        let unreach = decoded.update.mp_unreach().map(|m| m.nlri.evpn());
        for r in reach.into_iter().chain(unreach).flatten() {
            if let super::wire::evpn::EvpnRoute::Malformed {
                route_type, error, ..
            } = r
            {
                self.stats.malformed_nlri += 1;
                tracing::warn!(
                    peer_as = self.config.peer_as,
                    route_type,
                    update = %hex::encode(body),
                    "malformed EVPN NLRI dropped: {error}"
                );
                self.stats.last_error = Some(format!("malformed EVPN NLRI: {error}"));
            }
        }
    }

    /// Sends a NOTIFICATION for an error and fails the session.
    fn error(&mut self, now: Instant, n: Notification, why: &str) {
        if matches!(
            self.state,
            State::OpenSent | State::OpenConfirm | State::Established
        ) {
            self.send_notification(&n);
        }
        tracing::warn!(peer_as = self.config.peer_as, state = %self.state, "{why}");
        self.fail(now, why.to_owned());
    }

    /// Leaves the session in Idle after a failure, to start again after the backoff.
    fn fail(&mut self, now: Instant, why: String) {
        let was_established = self.state == State::Established;
        if was_established {
            let stable = self
                .established_at
                .is_some_and(|t| now.saturating_duration_since(t) >= self.config.connect_retry_max);
            if stable {
                self.backoff = self.config.connect_retry;
            } else {
                self.grow_backoff();
            }
        } else {
            self.stats.failed_attempts += 1;
            self.grow_backoff();
        }
        self.stats.last_error = Some(why.clone());
        self.enter_idle(why);
        if self.auto_start {
            self.auto_start_at = Some(now + self.backoff);
        }
    }

    fn enter_idle(&mut self, why: String) {
        let was_established = self.state == State::Established;
        if self.state != State::Idle {
            self.out.push_back(Output::Disconnect);
        }
        self.state = State::Idle;
        self.connect_retry_at = None;
        self.hold_at = None;
        self.keepalive_at = None;
        self.established_at = None;
        self.negotiated = None;
        self.rx.clear();
        if was_established {
            self.out.push_back(Output::Down(why));
        }
    }

    fn grow_backoff(&mut self) {
        self.backoff = (self.backoff * 2).min(self.config.connect_retry_max);
    }

    fn send(&mut self, bytes: Vec<u8>) {
        self.stats.messages_out += 1;
        self.out.push_back(Output::Send(bytes));
    }

    fn send_notification(&mut self, n: &Notification) {
        self.stats.notifications_out += 1;
        self.send(n.encode());
    }

    fn send_keepalive(&mut self, now: Instant) {
        self.stats.keepalives_out += 1;
        self.send(wire::keepalive());
        self.restart_keepalive(now);
    }

    fn restart_keepalive(&mut self, now: Instant) {
        if let Some(neg) = &self.negotiated {
            if neg.hold_time > 0 {
                self.keepalive_at = Some(now + keepalive_interval(neg.hold_time));
            }
        }
    }

    fn restart_hold(&mut self, now: Instant) {
        if let Some(neg) = &self.negotiated {
            if neg.hold_time > 0 {
                self.hold_at = Some(now + Duration::from_secs(u64::from(neg.hold_time)));
            }
        }
    }

    /// RFC 4271 section 6.8 collision resolution, once the peer's identifier is known: true
    /// when the connection the peer opened should win over the one this session holds.
    pub fn inbound_wins_collision(&self, inbound_peer_id: Ipv4Addr) -> bool {
        u32::from(self.config.local_id) < u32::from(inbound_peer_id)
    }

    /// Gives up the current connection after losing a collision: Cease / Connection Collision
    /// Resolution, then back to Active, ready for [`Event::TcpConnected`] on the peer's
    /// connection. No backoff: nothing failed.
    pub fn yield_connection(&mut self) {
        if matches!(self.state, State::OpenSent | State::OpenConfirm) {
            self.send_notification(&Notification::new(
                code::CEASE,
                cease_subcode::CONNECTION_COLLISION_RESOLUTION,
            ));
        }
        if self.state != State::Idle {
            self.out.push_back(Output::Disconnect);
        }
        self.state = State::Active;
        self.connect_retry_at = None;
        self.hold_at = None;
        self.keepalive_at = None;
        self.negotiated = None;
        self.rx.clear();
    }
}

/// A third of the hold time (RFC 4271 section 10), at least one second.
fn keepalive_interval(hold: u16) -> Duration {
    Duration::from_secs(u64::from(hold / 3).max(1))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::bgp::wire::notification::{open_subcode, update_subcode};
    use crate::bgp::wire::vectors::{unhex, V1_GOBGP_V4};

    const PEER_ID: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

    fn config() -> SessionConfig {
        SessionConfig {
            local_as: 65000,
            local_id: Ipv4Addr::new(10, 0, 0, 1),
            peer_as: 65000,
            hold_time: 9,
            passive: false,
            connect_retry: Duration::from_secs(1),
            connect_retry_max: Duration::from_secs(8),
            graceful_restart: None,
        }
    }

    fn drain(s: &mut Session) -> Vec<Output> {
        std::iter::from_fn(|| s.poll_output()).collect()
    }

    fn sent(outputs: &[Output]) -> Vec<MessageType> {
        outputs
            .iter()
            .filter_map(|o| match o {
                Output::Send(b) => Some(MessageView::parse(b).unwrap().unwrap().0.kind),
                _ => None,
            })
            .collect()
    }

    fn notification_sent(outputs: &[Output]) -> Notification {
        outputs
            .iter()
            .find_map(|o| match o {
                Output::Send(b) => {
                    let (v, _) = MessageView::parse(b).unwrap().unwrap();
                    (v.kind == MessageType::Notification).then(|| Notification::decode(v.body))
                }
                _ => None,
            })
            .expect("a NOTIFICATION was sent")
    }

    fn peer_open(hold: u16) -> Vec<u8> {
        Open::ours(65000, hold, PEER_ID).encode()
    }

    /// Drives a session to Established at `t0`; returns the outputs of the last step.
    fn establish(s: &mut Session, t0: Instant) -> Vec<Output> {
        s.handle(t0, Event::Start);
        assert_eq!(drain(s), vec![Output::Connect]);
        assert_eq!(s.state(), State::Connect);
        s.handle(t0, Event::TcpConnected);
        assert_eq!(sent(&drain(s)), vec![MessageType::Open]);
        assert_eq!(s.state(), State::OpenSent);
        s.handle(t0, Event::Bytes(&peer_open(30)));
        assert_eq!(sent(&drain(s)), vec![MessageType::Keepalive]);
        assert_eq!(s.state(), State::OpenConfirm);
        s.handle(t0, Event::Bytes(&wire::keepalive()));
        assert_eq!(s.state(), State::Established);
        drain(s)
    }

    #[test]
    fn active_session_reaches_established_and_negotiates_the_smaller_hold_time() {
        let mut s = Session::new(config());
        let t0 = Instant::now();
        let out = establish(&mut s, t0);
        match out.as_slice() {
            [Output::Established(n)] => {
                assert_eq!(n.hold_time, 9);
                assert_eq!(n.peer_id, PEER_ID);
                assert!(n.four_octet_as);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(s.stats().established_count, 1);
        // Keepalives every 3 s (9 / 3), hold timer at 9 s.
        assert_eq!(s.next_deadline(), Some(t0 + Duration::from_secs(3)));
    }

    #[test]
    fn passive_session_waits_for_the_peer_and_never_connects() {
        let mut s = Session::new(SessionConfig {
            passive: true,
            ..config()
        });
        let t0 = Instant::now();
        s.handle(t0, Event::Start);
        assert_eq!(s.state(), State::Active);
        assert!(drain(&mut s).is_empty());
        assert_eq!(s.next_deadline(), None);
        s.handle(t0, Event::TcpConnected);
        assert_eq!(s.state(), State::OpenSent);
        // A failed connection goes back to Active, still without connecting.
        s.handle(t0, Event::TcpFailed);
        assert_eq!(s.state(), State::Active);
        s.on_timer(t0 + Duration::from_secs(3600));
        assert!(!drain(&mut s).contains(&Output::Connect));
    }

    #[test]
    fn messages_split_across_reads_are_reassembled() {
        let mut s = Session::new(config());
        let t0 = Instant::now();
        s.handle(t0, Event::Start);
        s.handle(t0, Event::TcpConnected);
        drain(&mut s);
        let mut stream = peer_open(30);
        stream.extend_from_slice(&wire::keepalive());
        for b in &stream {
            s.handle(t0, Event::Bytes(std::slice::from_ref(b)));
        }
        assert_eq!(s.state(), State::Established);
    }

    #[test]
    fn keepalives_are_sent_and_the_hold_timer_expires_without_traffic() {
        let mut s = Session::new(config());
        let t0 = Instant::now();
        establish(&mut s, t0);
        let at = |secs| t0 + Duration::from_secs(secs);
        s.on_timer(at(3));
        assert_eq!(sent(&drain(&mut s)), vec![MessageType::Keepalive]);
        s.on_timer(at(6));
        assert_eq!(sent(&drain(&mut s)), vec![MessageType::Keepalive]);
        // A KEEPALIVE from the peer at 8 s pushes the hold timer to 17 s.
        s.handle(at(8), Event::Bytes(&wire::keepalive()));
        s.on_timer(at(9));
        assert_eq!(sent(&drain(&mut s)), vec![MessageType::Keepalive]);
        assert_eq!(s.state(), State::Established);
        s.on_timer(at(12));
        s.on_timer(at(15));
        drain(&mut s);
        s.on_timer(at(17));
        let out = drain(&mut s);
        let n = notification_sent(&out);
        assert_eq!(n.code, code::HOLD_TIMER_EXPIRED);
        assert!(out.contains(&Output::Disconnect));
        assert!(matches!(out.last(), Some(Output::Down(_))));
        assert_eq!(s.state(), State::Idle);
    }

    #[test]
    fn sending_an_update_restarts_the_keepalive_timer() {
        let mut s = Session::new(config());
        let t0 = Instant::now();
        establish(&mut s, t0);
        assert!(s.send_update(t0 + Duration::from_secs(2), unhex(V1_GOBGP_V4)));
        assert_eq!(s.next_deadline(), Some(t0 + Duration::from_secs(5)));
        assert_eq!(s.stats().updates_out, 1);
    }

    #[test]
    fn hold_time_zero_means_no_keepalives_and_no_hold_timer() {
        let mut s = Session::new(SessionConfig {
            hold_time: 0,
            ..config()
        });
        let t0 = Instant::now();
        establish(&mut s, t0);
        assert_eq!(s.next_deadline(), None);
        s.on_timer(t0 + Duration::from_secs(100_000));
        assert!(drain(&mut s).is_empty());
        assert_eq!(s.state(), State::Established);
    }

    #[test]
    fn open_sent_hold_timer_is_four_minutes() {
        let mut s = Session::new(config());
        let t0 = Instant::now();
        s.handle(t0, Event::Start);
        s.handle(t0, Event::TcpConnected);
        drain(&mut s);
        s.on_timer(t0 + OPEN_HOLD - Duration::from_millis(1));
        assert_eq!(s.state(), State::OpenSent);
        s.on_timer(t0 + OPEN_HOLD);
        assert_eq!(
            notification_sent(&drain(&mut s)).code,
            code::HOLD_TIMER_EXPIRED
        );
        assert_eq!(s.state(), State::Idle);
    }

    #[test]
    fn connect_retry_backs_off_exponentially_up_to_the_maximum() {
        let mut s = Session::new(config());
        let mut now = Instant::now();
        s.handle(now, Event::Start);
        assert_eq!(drain(&mut s), vec![Output::Connect]);
        let mut waits = Vec::new();
        for _ in 0..6 {
            s.handle(now, Event::TcpFailed);
            assert_eq!(s.state(), State::Active);
            let next = s.next_deadline().unwrap();
            waits.push((next - now).as_secs());
            now = next;
            s.on_timer(now);
            assert_eq!(drain(&mut s), vec![Output::Connect]);
            assert_eq!(s.state(), State::Connect);
        }
        assert_eq!(waits, vec![2, 4, 8, 8, 8, 8]);
        // A connect attempt that hangs is abandoned when ConnectRetry expires.
        let next = s.next_deadline().unwrap();
        s.on_timer(next);
        assert_eq!(drain(&mut s), vec![Output::Disconnect, Output::Connect]);
    }

    #[test]
    fn errors_restart_automatically_after_the_backoff_and_stop_does_not() {
        let mut s = Session::new(config());
        let t0 = Instant::now();
        establish(&mut s, t0);
        // Peer sends a NOTIFICATION 1 s later: Down, Idle, restart after the backoff (2 s,
        // since it was not Established for long enough to count as stable).
        let t1 = t0 + Duration::from_secs(1);
        s.handle(
            t1,
            Event::Bytes(&Notification::new(code::CEASE, 4).encode()),
        );
        let out = drain(&mut s);
        assert!(
            matches!(out.as_slice(), [Output::Disconnect, Output::Down(_)]),
            "{out:?}"
        );
        assert_eq!(s.state(), State::Idle);
        assert_eq!(s.next_deadline(), Some(t1 + Duration::from_secs(2)));
        s.on_timer(t1 + Duration::from_secs(2));
        assert_eq!(drain(&mut s), vec![Output::Connect]);
        // An operator stop sends a Cease with the shutdown message and stays Idle.
        s.handle(t1, Event::TcpConnected);
        drain(&mut s);
        s.handle(t1, Event::Stop(Some("maintenance")));
        let n = notification_sent(&drain(&mut s));
        assert_eq!(n.shutdown_message().as_deref(), Some("maintenance"));
        assert_eq!(s.state(), State::Idle);
        assert_eq!(s.next_deadline(), None);
    }

    #[test]
    fn a_stable_session_restarts_from_the_initial_backoff() {
        let mut s = Session::new(config());
        let t0 = Instant::now();
        establish(&mut s, t0);
        // Keep it alive for a minute, then lose the connection.
        let mut now = t0;
        for _ in 0..20 {
            now += Duration::from_secs(3);
            s.handle(now, Event::Bytes(&wire::keepalive()));
            s.on_timer(now);
        }
        drain(&mut s);
        s.handle(now, Event::TcpFailed);
        assert_eq!(s.next_deadline(), Some(now + Duration::from_secs(1)));
    }

    #[test]
    fn bad_opens_get_the_right_notification() {
        let cases: [(Vec<u8>, u8); 3] = [
            (
                Open::ours(65001, 30, PEER_ID).encode(),
                open_subcode::BAD_PEER_AS,
            ),
            (
                Open::ours(65000, 2, PEER_ID).encode(),
                open_subcode::UNACCEPTABLE_HOLD_TIME,
            ),
            (
                Open::ours(65000, 30, Ipv4Addr::new(10, 0, 0, 1)).encode(),
                open_subcode::BAD_BGP_IDENTIFIER,
            ),
        ];
        for (open, subcode) in cases {
            let mut s = Session::new(config());
            let t0 = Instant::now();
            s.handle(t0, Event::Start);
            s.handle(t0, Event::TcpConnected);
            drain(&mut s);
            s.handle(t0, Event::Bytes(&open));
            let out = drain(&mut s);
            let n = notification_sent(&out);
            assert_eq!((n.code, n.subcode), (code::OPEN_MESSAGE, subcode));
            assert_eq!(s.state(), State::Idle);
            assert!(!out.iter().any(|o| matches!(o, Output::Down(_))));
        }
    }

    #[test]
    fn unexpected_messages_are_fsm_errors_with_rfc_6608_subcodes() {
        // KEEPALIVE in OpenSent.
        let mut s = Session::new(config());
        let t0 = Instant::now();
        s.handle(t0, Event::Start);
        s.handle(t0, Event::TcpConnected);
        drain(&mut s);
        s.handle(t0, Event::Bytes(&wire::keepalive()));
        let n = notification_sent(&drain(&mut s));
        assert_eq!(
            (n.code, n.subcode, n.data.as_slice()),
            (code::FSM, 1, &[4u8][..])
        );
        // UPDATE in OpenConfirm.
        let mut s = Session::new(config());
        s.handle(t0, Event::Start);
        s.handle(t0, Event::TcpConnected);
        s.handle(t0, Event::Bytes(&peer_open(30)));
        drain(&mut s);
        s.handle(t0, Event::Bytes(&unhex(V1_GOBGP_V4)));
        let n = notification_sent(&drain(&mut s));
        assert_eq!((n.code, n.subcode), (code::FSM, 2));
        // OPEN in Established.
        let mut s = Session::new(config());
        establish(&mut s, t0);
        s.handle(t0, Event::Bytes(&peer_open(30)));
        let n = notification_sent(&drain(&mut s));
        assert_eq!((n.code, n.subcode), (code::FSM, 3));
    }

    #[test]
    fn header_errors_reset_the_session() {
        let mut s = Session::new(config());
        let t0 = Instant::now();
        establish(&mut s, t0);
        let mut bad = wire::keepalive();
        bad[0] = 0;
        s.handle(t0, Event::Bytes(&bad));
        let n = notification_sent(&drain(&mut s));
        assert_eq!((n.code, n.subcode), (code::MESSAGE_HEADER, 1));
        assert_eq!(s.state(), State::Idle);
    }

    #[test]
    fn updates_are_decoded_and_rfc_7606_outcomes_counted() {
        let mut s = Session::new(config());
        let t0 = Instant::now();
        establish(&mut s, t0);
        s.handle(t0, Event::Bytes(&unhex(V1_GOBGP_V4)));
        match drain(&mut s).as_slice() {
            [Output::Update(d)] => assert_eq!(d.rt5_changes().announced.len(), 1),
            other => panic!("{other:?}"),
        }
        // Bad ORIGIN value: treat-as-withdraw, the session stays up.
        let mut taw = unhex(V1_GOBGP_V4);
        taw[19 + 4 + 3] = 7;
        s.handle(t0, Event::Bytes(&taw));
        match drain(&mut s).as_slice() {
            [Output::Update(d)] => {
                assert!(d.treat_as_withdraw);
                assert_eq!(d.rt5_changes().withdrawn.len(), 1);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(s.stats().updates_treat_as_withdraw, 1);
        assert_eq!(s.state(), State::Established);
        let err = s.stats().last_error.clone().unwrap_or_default();
        assert!(err.contains("treat-as-withdraw"), "{err}");
        // An RT-5 with an IPv4 prefix length of 33: that NLRI alone is dropped, counted
        // for this peer and named in last_error.
        let mut bad = unhex(V1_GOBGP_V4);
        let at = bad.windows(2).position(|w| w == [0x05, 0x22]).unwrap();
        bad[at + 2 + 22] = 33;
        s.handle(t0, Event::Bytes(&bad));
        match drain(&mut s).as_slice() {
            [Output::Update(d)] => assert_eq!(d.rt5_changes().ignored, 1),
            other => panic!("{other:?}"),
        }
        assert_eq!(s.stats().malformed_nlri, 1);
        let err = s.stats().last_error.clone().unwrap_or_default();
        assert!(err.contains("malformed EVPN NLRI"), "{err}");
        // Total attribute length beyond the message: session reset.
        let mut reset = unhex(V1_GOBGP_V4);
        reset[19 + 3] = 0xff;
        s.handle(t0, Event::Bytes(&reset));
        let out = drain(&mut s);
        let n = notification_sent(&out);
        assert_eq!(
            (n.code, n.subcode),
            (
                code::UPDATE_MESSAGE,
                update_subcode::MALFORMED_ATTRIBUTE_LIST
            )
        );
        assert!(matches!(out.last(), Some(Output::Down(_))));
        assert_eq!(s.stats().update_session_resets, 1);
    }

    #[test]
    fn route_refresh_for_evpn_is_reported() {
        let mut s = Session::new(config());
        let t0 = Instant::now();
        establish(&mut s, t0);
        let rr = RouteRefresh {
            afi: wire::AFI_L2VPN,
            subtype: 0,
            safi: wire::SAFI_EVPN,
        };
        s.handle(t0, Event::Bytes(&rr.encode()));
        assert_eq!(drain(&mut s), vec![Output::RouteRefresh(rr)]);
        assert!(s.send_route_refresh());
        assert_eq!(sent(&drain(&mut s)), vec![MessageType::RouteRefresh]);
    }

    #[test]
    fn updates_are_only_sent_when_established() {
        let mut s = Session::new(config());
        let t0 = Instant::now();
        s.handle(t0, Event::Start);
        assert!(!s.send_update(t0, unhex(V1_GOBGP_V4)));
        assert!(drain(&mut s).iter().all(|o| !matches!(o, Output::Send(_))));
    }

    #[test]
    fn collision_resolution_follows_rfc_4271_and_yields_without_backoff() {
        let mut s = Session::new(config());
        assert!(s.inbound_wins_collision(Ipv4Addr::new(10, 0, 0, 2)));
        assert!(!s.inbound_wins_collision(Ipv4Addr::new(9, 0, 0, 1)));
        let t0 = Instant::now();
        s.handle(t0, Event::Start);
        s.handle(t0, Event::TcpConnected);
        s.handle(t0, Event::Bytes(&peer_open(30)));
        drain(&mut s);
        s.yield_connection();
        let out = drain(&mut s);
        let n = notification_sent(&out);
        assert_eq!((n.code, n.subcode), (code::CEASE, 7));
        assert_eq!(s.state(), State::Active);
        s.handle(t0, Event::TcpConnected);
        assert_eq!(s.state(), State::OpenSent);
    }

    #[test]
    fn ebgp_sessions_decode_with_an_external_context() {
        let mut s = Session::new(SessionConfig {
            peer_as: 65001,
            ..config()
        });
        let t0 = Instant::now();
        s.handle(t0, Event::Start);
        s.handle(t0, Event::TcpConnected);
        s.handle(t0, Event::Bytes(&Open::ours(65001, 30, PEER_ID).encode()));
        s.handle(t0, Event::Bytes(&wire::keepalive()));
        assert_eq!(s.state(), State::Established);
        assert!(!s.context().ibgp);
        assert!(s.context().four_octet_as);
    }
}
