//! The Serf RPC client against real `serf agent`s in test-bed namespaces.
#![allow(clippy::unwrap_used)]

#[path = "serf_common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{bridged, eventually, spawn_agent, start_raw_agent, RawAgent, RawAgentSpec};
use gatewan_control::mesh::rpc::{
    Event, MemberEventKind, MemberFilter, MemberStatus, QueryParams, QueryRecord, RpcClient,
    RpcError,
};
use gatewan_testbed::{require, Need, Testbed};

const KEY1: &str = "EPaT8geoOsfWlZRQSz+RqU0veFxQNVXyCo7XT16AuE4=";
const KEY2: &str = "PpVPsJaXcPcYLzIXRqgVQCo+D5T+Rik96xN6S7twzsQ=";

fn needs() {
    require(&[Need::Root, Need::Tool("serf")]);
}

fn two_agents(tb: &mut Testbed, auth: Option<&str>, keys: &[&str]) -> (RawAgent, RawAgent) {
    let nets = bridged(tb, &["a", "b"]);
    let a = start_raw_agent(
        tb,
        &nets[0].0,
        &RawAgentSpec {
            name: "rpc-a",
            bind: format!("{}:7946", nets[0].1).parse().unwrap(),
            rpc_port: 7411,
            auth,
            keys,
            tags: &[("dc", "t1"), ("role", "test")],
        },
    );
    let b = start_raw_agent(
        tb,
        &nets[1].0,
        &RawAgentSpec {
            name: "rpc-b",
            bind: format!("{}:7946", nets[1].1).parse().unwrap(),
            rpc_port: 7412,
            auth,
            keys,
            tags: &[("dc", "t2")],
        },
    );
    (a, b)
}

async fn joined(a: &RpcClient, b: &RawAgent) {
    let n = a.join(&[b.bind.to_string()], false).await.unwrap();
    assert_eq!(n, 1);
    eventually("both members alive", Duration::from_secs(20), || async {
        let members = a.members().await.unwrap();
        (members.len() == 2 && members.iter().all(|m| m.status == MemberStatus::Alive))
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serf_rpc_auth_is_enforced_with_typed_errors() {
    needs();
    let mut tb = Testbed::new().unwrap();
    let (a, _b) = two_agents(&mut tb, Some("s3cret"), &[]);
    let good = a.client().await;
    assert_eq!(good.generation(), 1);

    // No key: the handshake succeeds, every command after it is refused.
    let anon = a.try_client(None).await.unwrap();
    assert_eq!(anon.members().await.unwrap_err(), RpcError::AuthRequired);
    // The connection stays usable after that refusal (no body was expected or consumed).
    assert_eq!(anon.stats().await.unwrap_err(), RpcError::AuthRequired);

    // Wrong key: refused at connect time.
    assert_eq!(
        a.try_client(Some("wrong")).await.unwrap_err(),
        RpcError::AuthFailed
    );

    let members = good.members().await.unwrap();
    assert_eq!(members.len(), 1);
    assert_eq!(members[0].name, "rpc-a");
    assert_eq!(members[0].status, MemberStatus::Alive);
    assert_eq!(members[0].tags.get("dc").map(String::as_str), Some("t1"));
    assert_eq!(members[0].addr.to_string(), "10.77.0.1");
    assert_eq!(members[0].port, 7946);
    assert!(members[0].protocol[2] >= 2, "{:?}", members[0].protocol);

    // An event filter the agent does not know is a typed error.
    assert_eq!(
        good.stream("bogus-kind").await.err(),
        Some(RpcError::InvalidFilter)
    );
    // A respond to a query that does not exist.
    assert_eq!(
        good.respond(4242, b"x").await.unwrap_err(),
        RpcError::UnknownQuery
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serf_rpc_members_tags_events_and_queries() {
    needs();
    let mut tb = Testbed::new().unwrap();
    let (a, b) = two_agents(&mut tb, Some("k"), &[]);
    let ca = a.client().await;
    let cb = b.client().await;
    joined(&ca, &b).await;

    // members-filtered: by name, by tag, and an invalid regexp (the agent drops the
    // connection without answering; the client reports it and dials again).
    let only_b = ca
        .members_filtered(&MemberFilter {
            name: "rpc-b".into(),
            ..MemberFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(only_b.len(), 1);
    assert_eq!(only_b[0].name, "rpc-b");
    let mut tags = BTreeMap::new();
    tags.insert("dc".to_string(), "t[12]".to_string());
    let by_tag = ca
        .members_filtered(&MemberFilter {
            tags,
            ..MemberFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(by_tag.len(), 2);
    let generation = ca.generation();
    let err = ca
        .members_filtered(&MemberFilter {
            name: "(".into(),
            ..MemberFilter::default()
        })
        .await
        .unwrap_err();
    assert!(matches!(err, RpcError::ConnectionLost(_)), "{err:?}");
    assert_eq!(ca.members().await.unwrap().len(), 2);
    assert_eq!(ca.generation(), generation + 1);

    // Streams: b watches user events and member updates.
    let mut events = cb.stream("user:hello,member-update").await.unwrap();
    ca.user_event("hello", b"payload-1", false).await.unwrap();
    let ev = tokio::time::timeout(Duration::from_secs(20), events.next())
        .await
        .unwrap()
        .unwrap();
    match ev {
        Event::User {
            name,
            payload,
            coalesce,
            ..
        } => {
            assert_eq!(name, "hello");
            assert_eq!(payload, b"payload-1");
            assert!(!coalesce);
        }
        other => panic!("unexpected {other:?}"),
    }

    // Oversized user event: the agent's own limit, surfaced as a typed agent error.
    let err = ca
        .user_event("hello", &[0u8; 600], false)
        .await
        .unwrap_err();
    match err {
        RpcError::Agent { command, message } => {
            assert_eq!(command, "event");
            assert!(message.contains("exceeds"), "{message}");
        }
        other => panic!("unexpected {other:?}"),
    }

    // Tags: set one, delete one, seen by b as a member-update.
    let mut set = BTreeMap::new();
    set.insert("echo".to_string(), "7054".to_string());
    ca.set_tags(&set, &["role".to_string()]).await.unwrap();
    let update = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if let Event::Member {
                kind: MemberEventKind::Update,
                members,
            } = events.next().await.unwrap()
            {
                if let Some(m) = members.into_iter().find(|m| m.name == "rpc-a") {
                    return m;
                }
            }
        }
    })
    .await
    .expect("member-update for rpc-a");
    assert_eq!(update.tags.get("echo").map(String::as_str), Some("7054"));
    assert!(!update.tags.contains_key("role"));
    // Tags over 512 encoded bytes: refused by the agent.
    let mut huge = BTreeMap::new();
    huge.insert("big".to_string(), "x".repeat(600));
    let err = ca.set_tags(&huge, &[]).await.unwrap_err();
    assert!(
        matches!(&err, RpcError::Agent { command: "tags", message } if message.contains("512")),
        "{err:?}"
    );

    // Query and respond: b answers "ping" queries addressed to it.
    let mut queries = cb.stream("query:ping").await.unwrap();
    let responder = {
        let cb = cb.clone();
        tokio::spawn(async move {
            loop {
                match queries.next().await {
                    Ok(Event::Query { id, payload, .. }) => {
                        let mut answer = b"pong:".to_vec();
                        answer.extend_from_slice(&payload);
                        cb.respond(id, &answer).await.unwrap();
                    }
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        })
    };
    let mut q = ca
        .query(&QueryParams {
            name: "ping".into(),
            payload: b"42".to_vec(),
            filter_nodes: vec!["rpc-b".into()],
            request_ack: true,
            timeout: Some(Duration::from_secs(3)),
            ..QueryParams::default()
        })
        .await
        .unwrap();
    let mut acks = Vec::new();
    let mut responses = Vec::new();
    while let Some(rec) = q.next().await.unwrap() {
        match rec {
            QueryRecord::Ack { from } => acks.push(from),
            QueryRecord::Response { from, payload } => responses.push((from, payload)),
        }
    }
    assert_eq!(acks, vec!["rpc-b".to_string()]);
    assert_eq!(responses, vec![("rpc-b".to_string(), b"pong:42".to_vec())]);
    responder.abort();

    // Stats.
    let stats = ca.stats().await.unwrap();
    assert_eq!(
        stats
            .get("agent")
            .and_then(|s| s.get("name"))
            .map(String::as_str),
        Some("rpc-a")
    );
    assert_eq!(
        stats
            .get("serf")
            .and_then(|s| s.get("members"))
            .map(String::as_str),
        Some("2")
    );

    // Monitor: a log line arrives after something happens.
    let mut log = ca.monitor("debug").await.unwrap();
    assert_eq!(
        ca.monitor("debug").await.err(),
        Some(RpcError::MonitorExists)
    );
    ca.user_event("hello", b"x", false).await.unwrap();
    let line = tokio::time::timeout(Duration::from_secs(20), log.next())
        .await
        .unwrap()
        .unwrap();
    assert!(!line.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serf_rpc_keyring_rotation() {
    needs();
    let mut tb = Testbed::new().unwrap();
    let (a, b) = two_agents(&mut tb, None, &[KEY1]);
    let ca = a.client().await;
    joined(&ca, &b).await;

    let listed = ca.list_keys().await.unwrap();
    assert_eq!(listed.num_nodes, 2);
    assert_eq!(listed.keys.get(KEY1), Some(&2));

    let installed = ca.install_key(KEY2).await.unwrap();
    assert_eq!((installed.num_resp, installed.num_err), (2, 0));
    let listed = ca.list_keys().await.unwrap();
    assert_eq!(listed.keys.get(KEY2), Some(&2));

    // The primary key cannot be removed: a typed keyring error with per-node messages.
    let err = ca.remove_key(KEY1).await.unwrap_err();
    match err {
        RpcError::Keyring { response, .. } => {
            assert_eq!(response.num_err, 2);
            assert_eq!(response.messages.len(), 2);
        }
        other => panic!("unexpected {other:?}"),
    }

    ca.use_key(KEY2).await.unwrap();
    ca.remove_key(KEY1).await.unwrap();
    let listed = ca.list_keys().await.unwrap();
    assert_eq!(listed.keys.len(), 1, "{listed:?}");
    assert_eq!(listed.keys.get(KEY2), Some(&2));

    // A malformed key is refused by the agent.
    let err = ca.install_key("not base64").await.unwrap_err();
    assert!(
        matches!(err, RpcError::Keyring { .. } | RpcError::Agent { .. }),
        "{err:?}"
    );
    // Still one mesh after rotation.
    assert!(ca
        .members()
        .await
        .unwrap()
        .iter()
        .all(|m| m.status == MemberStatus::Alive));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serf_rpc_pipelines_and_survives_agent_restart() {
    needs();
    let mut tb = Testbed::new().unwrap();
    let (a, _b) = two_agents(&mut tb, Some("k"), &[]);
    let client = a.client().await;

    // 300 requests in flight at once on one connection, of three kinds whose answers have
    // different shapes: each must get its own answer.
    let mut set = tokio::task::JoinSet::new();
    for i in 0..300u32 {
        let c = client.clone();
        set.spawn(async move {
            match i % 3 {
                0 => c.members().await.map(|m| assert_eq!(m[0].name, "rpc-a")),
                1 => c.stats().await.map(|s| assert!(s.contains_key("agent"))),
                _ => c.user_event("pipelined", &i.to_be_bytes(), false).await,
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap().unwrap();
    }
    assert_eq!(client.generation(), 1);

    // Kill the agent: the open stream and the next call report the loss.
    let mut stream = client.stream("user").await.unwrap();
    tb.kill(a.pid);
    let err = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, RpcError::ConnectionLost(_)), "{err:?}");
    let err = client.members().await.unwrap_err();
    assert!(err.is_connection(), "{err:?}");

    // Start it again: the same client dials, handshakes and authenticates by itself.
    let _pid = spawn_agent(&mut tb, &a.netns, &a.config);
    let members = eventually("agent back", Duration::from_secs(20), || async {
        client.members().await.ok()
    })
    .await;
    assert_eq!(members[0].name, "rpc-a");
    assert_eq!(client.generation(), 2);
    let mut stream = client.stream("user:again").await.unwrap();
    client.user_event("again", b"1", false).await.unwrap();
    let ev = tokio::time::timeout(Duration::from_secs(20), stream.next())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(ev, Event::User { name, .. } if name == "again"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serf_tags_budget_matches_the_agent() {
    use gatewan_control::mesh::tags::{check_size, encoded_len, TAGS_LIMIT};
    needs();
    let mut tb = Testbed::new().unwrap();
    let (a, _b) = two_agents(&mut tb, None, &[]);
    let c = a.client().await;
    // Fill tags to exactly the limit as gatewan counts it; then one byte more.
    let mut tags = BTreeMap::new();
    tags.insert("dc".to_string(), "t1".to_string());
    tags.insert("role".to_string(), "test".to_string());
    let base = encoded_len(&tags) + 1 + 3; // key "pad" + raw16 header of a long value
    let mut fill = TAGS_LIMIT - base - 3;
    tags.insert("pad".to_string(), "x".repeat(fill));
    assert_eq!(encoded_len(&tags), TAGS_LIMIT);
    assert!(check_size(&tags).is_ok());
    c.set_tags(&tags, &[]).await.unwrap();
    fill += 1;
    tags.insert("pad".to_string(), "x".repeat(fill));
    assert_eq!(encoded_len(&tags), TAGS_LIMIT + 1);
    assert!(check_size(&tags).is_err());
    let err = c.set_tags(&tags, &[]).await.unwrap_err();
    assert!(
        matches!(
            err,
            RpcError::Agent {
                command: "tags",
                ..
            }
        ),
        "{err:?}"
    );
}
