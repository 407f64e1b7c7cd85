//! The typed view of the mesh: every member with its status, metadata and verified prefix
//! list. A sans-IO state machine fed Serf members, member events and list chunks (with the
//! time passed in), producing [`MeshChange`]s and [`MeshSnapshot`]s. `mesh::node` drives it
//! from a live agent and publishes snapshots (tokio `watch`) and changes (`broadcast`) to the
//! tunnel manager and the controller; `gatewan members` drives it from one `members` call.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Instant;

use serde::Serialize;

use super::prefixes::{
    AppliedList, ChunkOutcome, PrefixSync, Pull, Reject, SyncConfig, SyncCounters,
};
use super::rpc::{Member, MemberEventKind, MemberStatus};
use super::tags::{GatewayMeta, Role};

/// A member's state as gatewan reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GatewayStatus {
    Alive,
    /// Last known alive, but not vouched for right now: our own agent is unreachable (so
    /// nothing is being observed), or Serf reports a status gatewan does not know. Serf's
    /// RPC does not expose memberlist's internal suspicion, so this is gatewan's own.
    Suspect,
    Failed,
    Leaving,
    Left,
}

impl GatewayStatus {
    fn from_serf(s: &MemberStatus) -> Self {
        match s {
            MemberStatus::Alive => GatewayStatus::Alive,
            MemberStatus::Leaving => GatewayStatus::Leaving,
            MemberStatus::Left => GatewayStatus::Left,
            MemberStatus::Failed => GatewayStatus::Failed,
            MemberStatus::Other(_) => GatewayStatus::Suspect,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            GatewayStatus::Alive => "alive",
            GatewayStatus::Suspect => "suspect",
            GatewayStatus::Failed => "failed",
            GatewayStatus::Leaving => "leaving",
            GatewayStatus::Left => "left",
        }
    }
}

/// One member of the mesh.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GatewayEntry {
    pub name: String,
    /// Gossip address.
    pub addr: SocketAddr,
    pub status: GatewayStatus,
    /// Parsed tags; `None` with `meta_error` set if they did not parse.
    pub meta: Option<GatewayMeta>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meta_error: Option<String>,
    /// The latest complete, verified prefix list.
    pub prefixes: Option<AppliedList>,
    /// The raw tags, as `serf members` shows them.
    pub tags: BTreeMap<String, String>,
}

impl GatewayEntry {
    pub fn role(&self) -> Option<&Role> {
        self.meta.as_ref().map(|m| &m.role)
    }

    pub fn is_gateway(&self) -> bool {
        self.role() == Some(&Role::Gateway)
    }

    /// Whether the applied list is the one the tags announce.
    pub fn prefixes_current(&self) -> bool {
        match (
            self.meta.as_ref().and_then(|m| m.prefix_list),
            &self.prefixes,
        ) {
            (Some(tag), Some(list)) => list.version >= tag.version,
            (None, _) => true,
            (Some(_), None) => false,
        }
    }
}

/// What changed, for listeners that react to deltas.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum MeshChange {
    Added {
        name: String,
        status: GatewayStatus,
    },
    Status {
        name: String,
        from: GatewayStatus,
        to: GatewayStatus,
    },
    Meta {
        name: String,
    },
    Prefixes {
        name: String,
        version: u64,
        count: usize,
    },
    Removed {
        name: String,
    },
    AgentLink {
        connected: bool,
    },
}

/// Counters beyond the prefix assembler's.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ViewCounters {
    pub list: SyncCounters,
    /// Member records whose tags did not parse.
    pub bad_tags: u64,
}

/// A consistent copy of the view.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MeshSnapshot {
    pub local: String,
    pub agent_connected: bool,
    pub members: BTreeMap<String, GatewayEntry>,
    pub counters: ViewCounters,
}

impl MeshSnapshot {
    /// Members whose role is gateway.
    pub fn gateways(&self) -> impl Iterator<Item = &GatewayEntry> {
        self.members.values().filter(|e| e.is_gateway())
    }

    /// Members whose role is controller.
    pub fn controllers(&self) -> impl Iterator<Item = &GatewayEntry> {
        self.members
            .values()
            .filter(|e| e.role() == Some(&Role::Controller))
    }

    /// Members whose role is bgpctl.
    pub fn bgpctls(&self) -> impl Iterator<Item = &GatewayEntry> {
        self.members
            .values()
            .filter(|e| e.role() == Some(&Role::Bgpctl))
    }
}

/// The view's state machine.
pub struct MeshView {
    local: String,
    agent_connected: bool,
    members: BTreeMap<String, GatewayEntry>,
    sync: PrefixSync,
    bad_tags: u64,
}

impl MeshView {
    /// `sync.local` is the node whose own list is not assembled from the mesh; `local` names
    /// it in snapshots.
    pub fn new(sync: SyncConfig) -> Self {
        MeshView {
            local: sync.local.clone(),
            agent_connected: false,
            members: BTreeMap::new(),
            sync: PrefixSync::new(sync),
            bad_tags: 0,
        }
    }

    pub fn snapshot(&self) -> MeshSnapshot {
        MeshSnapshot {
            local: self.local.clone(),
            agent_connected: self.agent_connected,
            members: self.members.clone(),
            counters: ViewCounters {
                list: self.sync.counters().clone(),
                bad_tags: self.bad_tags,
            },
        }
    }

    pub fn get(&self, name: &str) -> Option<&GatewayEntry> {
        self.members.get(name)
    }

    /// Our own list, which we publish rather than assemble.
    pub fn set_local_prefixes(&mut self, list: AppliedList) -> Vec<MeshChange> {
        let mut changes = Vec::new();
        if let Some(e) = self.members.get_mut(&self.local) {
            if e.prefixes.as_ref().map(|p| p.version) != Some(list.version) {
                changes.push(MeshChange::Prefixes {
                    name: self.local.clone(),
                    version: list.version,
                    count: list.prefixes.len(),
                });
            }
            e.prefixes = Some(list);
        }
        changes
    }

    fn upsert(&mut self, m: &Member, now: Instant, changes: &mut Vec<MeshChange>) {
        let status = GatewayStatus::from_serf(&m.status);
        let (meta, meta_error) = match GatewayMeta::from_tags(&m.tags) {
            Ok(meta) => (Some(meta), None),
            Err(e) => {
                self.bad_tags += 1;
                (None, Some(e.to_string()))
            }
        };
        let tag = meta.as_ref().and_then(|m| m.prefix_list);
        self.sync
            .on_member(&m.name, status == GatewayStatus::Alive, tag, now);
        let prefixes = self.sync.applied(&m.name).cloned();
        let addr = SocketAddr::new(m.addr, m.port);
        match self.members.get_mut(&m.name) {
            None => {
                changes.push(MeshChange::Added {
                    name: m.name.clone(),
                    status,
                });
                self.members.insert(
                    m.name.clone(),
                    GatewayEntry {
                        name: m.name.clone(),
                        addr,
                        status,
                        meta,
                        meta_error,
                        prefixes: if m.name == self.local { None } else { prefixes },
                        tags: m.tags.clone(),
                    },
                );
            }
            Some(e) => {
                if e.status != status {
                    changes.push(MeshChange::Status {
                        name: m.name.clone(),
                        from: e.status,
                        to: status,
                    });
                    e.status = status;
                }
                if e.tags != m.tags || e.addr != addr {
                    changes.push(MeshChange::Meta {
                        name: m.name.clone(),
                    });
                    e.tags = m.tags.clone();
                    e.meta = meta;
                    e.meta_error = meta_error;
                    e.addr = addr;
                }
                if m.name != self.local && prefixes.is_some() && e.prefixes != prefixes {
                    e.prefixes = prefixes;
                }
            }
        }
    }

    /// Replaces the whole membership with the agent's `members` answer (after any gap).
    pub fn reconcile(&mut self, members: &[Member], now: Instant) -> Vec<MeshChange> {
        let mut changes = Vec::new();
        if !self.agent_connected {
            self.agent_connected = true;
            changes.push(MeshChange::AgentLink { connected: true });
        }
        for m in members {
            self.upsert(m, now, &mut changes);
        }
        let gone: Vec<String> = self
            .members
            .keys()
            .filter(|n| !members.iter().any(|m| &m.name == *n))
            .cloned()
            .collect();
        for name in gone {
            self.members.remove(&name);
            self.sync.forget(&name);
            changes.push(MeshChange::Removed { name });
        }
        changes
    }

    /// Applies one member event.
    pub fn member_event(
        &mut self,
        kind: MemberEventKind,
        members: &[Member],
        now: Instant,
    ) -> Vec<MeshChange> {
        let mut changes = Vec::new();
        for m in members {
            if kind == MemberEventKind::Reap {
                if self.members.remove(&m.name).is_some() {
                    changes.push(MeshChange::Removed {
                        name: m.name.clone(),
                    });
                }
                self.sync.forget(&m.name);
            } else {
                self.upsert(m, now, &mut changes);
            }
        }
        changes
    }

    /// Our agent is unreachable: nothing we hold is being observed any more.
    pub fn agent_lost(&mut self) -> Vec<MeshChange> {
        let mut changes = Vec::new();
        if !self.agent_connected {
            return changes;
        }
        self.agent_connected = false;
        changes.push(MeshChange::AgentLink { connected: false });
        for e in self.members.values_mut() {
            if e.status == GatewayStatus::Alive {
                changes.push(MeshChange::Status {
                    name: e.name.clone(),
                    from: e.status,
                    to: GatewayStatus::Suspect,
                });
                e.status = GatewayStatus::Suspect;
            }
        }
        changes
    }

    /// Feeds a list chunk (a user event's payload, or a query answer with its sender).
    pub fn chunk(
        &mut self,
        bytes: &[u8],
        from: Option<&str>,
        now: Instant,
    ) -> (Result<ChunkOutcome, Reject>, Vec<MeshChange>) {
        let result = self.sync.on_chunk(bytes, from, now);
        let mut changes = Vec::new();
        if let Ok(ChunkOutcome::Applied(list)) = &result {
            if let Some(e) = self.members.get_mut(&list.origin) {
                e.prefixes = Some(list.clone());
                changes.push(MeshChange::Prefixes {
                    name: list.origin.clone(),
                    version: list.version,
                    count: list.prefixes.len(),
                });
            }
        }
        (result, changes)
    }

    /// Chunks to pull now.
    pub fn poll(&mut self, now: Instant) -> Vec<Pull> {
        self.sync.poll(now)
    }

    pub fn counters(&self) -> &SyncCounters {
        self.sync.counters()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::mesh::prefixes::{encode, PrefixList};
    use crate::mesh::tags::TransitMeta;
    use std::net::{IpAddr, Ipv4Addr};
    use std::time::Duration;

    fn member(name: &str, status: MemberStatus, pl: Option<crate::mesh::tags::ListTag>) -> Member {
        let meta = GatewayMeta {
            role: Role::Gateway,
            datacenter: "sg1".into(),
            transits: vec![TransitMeta {
                name: "lumen".into(),
                public_key: [1; 32],
                endpoints: vec!["203.0.113.1:6152".parse().unwrap()],
            }],
            echo_port: Some(7054),
            prefix_list: pl,
            id: None,
            api: None,
            lead: None,
        };
        Member {
            name: name.into(),
            addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            port: 7946,
            tags: meta.to_tags().unwrap(),
            status,
            protocol: [2, 5, 5],
            delegate: [2, 5, 5],
        }
    }

    #[test]
    fn membership_status_and_prefixes_flow_into_the_view() {
        let mut v = MeshView::new(SyncConfig::new("me"));
        let now = Instant::now();
        let list = PrefixList::new(["10.1.0.0/16".parse().unwrap(), "fd01::/48".parse().unwrap()]);
        let enc = encode(&list, "gw2", 1, 448).unwrap();
        let changes = v.reconcile(
            &[
                member("me", MemberStatus::Alive, None),
                member("gw2", MemberStatus::Alive, Some(enc.tag())),
            ],
            now,
        );
        assert!(changes.contains(&MeshChange::AgentLink { connected: true }));
        assert_eq!(
            changes
                .iter()
                .filter(|c| matches!(c, MeshChange::Added { .. }))
                .count(),
            2
        );
        assert!(!v.get("gw2").unwrap().prefixes_current());
        let (r, changes) = v.chunk(&enc.chunks[0], None, now);
        assert!(matches!(r, Ok(ChunkOutcome::Applied(_))));
        assert_eq!(
            changes,
            vec![MeshChange::Prefixes {
                name: "gw2".into(),
                version: 1,
                count: 2
            }]
        );
        let snap = v.snapshot();
        assert_eq!(snap.gateways().count(), 2);
        assert!(snap.members["gw2"].prefixes_current());
        assert_eq!(
            *snap.members["gw2"].prefixes.as_ref().unwrap().prefixes,
            list
        );

        // Failed, then reaped.
        let changes = v.member_event(
            MemberEventKind::Failed,
            &[member("gw2", MemberStatus::Failed, Some(enc.tag()))],
            now,
        );
        assert_eq!(
            changes,
            vec![MeshChange::Status {
                name: "gw2".into(),
                from: GatewayStatus::Alive,
                to: GatewayStatus::Failed
            }]
        );
        // Its list stays known while it is failed (it may come back with the same one).
        assert!(v.get("gw2").unwrap().prefixes.is_some());
        let changes = v.member_event(
            MemberEventKind::Reap,
            &[member("gw2", MemberStatus::Failed, None)],
            now,
        );
        assert_eq!(changes, vec![MeshChange::Removed { name: "gw2".into() }]);
        assert!(v.get("gw2").is_none());
    }

    #[test]
    fn losing_the_agent_makes_alive_members_suspect_until_reconciled() {
        let mut v = MeshView::new(SyncConfig::new("me"));
        let now = Instant::now();
        v.reconcile(
            &[
                member("me", MemberStatus::Alive, None),
                member("gw2", MemberStatus::Alive, None),
                member("gw3", MemberStatus::Left, None),
            ],
            now,
        );
        let changes = v.agent_lost();
        assert_eq!(changes.len(), 3); // link + two alive members
        assert_eq!(v.get("gw2").unwrap().status, GatewayStatus::Suspect);
        assert_eq!(v.get("gw3").unwrap().status, GatewayStatus::Left);
        // After the gap: gw3 was reaped meanwhile, gw2 is alive again.
        let changes = v.reconcile(
            &[
                member("me", MemberStatus::Alive, None),
                member("gw2", MemberStatus::Alive, None),
            ],
            now + Duration::from_secs(1),
        );
        assert!(changes.contains(&MeshChange::Removed { name: "gw3".into() }));
        assert_eq!(v.get("gw2").unwrap().status, GatewayStatus::Alive);
    }

    #[test]
    fn members_with_bad_tags_are_kept_and_counted() {
        let mut v = MeshView::new(SyncConfig::new("me"));
        let mut m = member("odd", MemberStatus::Alive, None);
        m.tags.insert("echo".into(), "not-a-port".into());
        v.reconcile(&[m], Instant::now());
        let e = v.get("odd").unwrap();
        assert!(e.meta.is_none());
        assert!(e.meta_error.as_deref().unwrap().contains("echo"));
        assert_eq!(v.snapshot().counters.bad_tags, 1);
        assert_eq!(v.snapshot().gateways().count(), 0);
    }
}
