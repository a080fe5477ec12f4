//! A small machine and cluster helpers shared by the node's tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use chorus_node::{Node, NodeConfig, ServerRef, StorageMode};
use chorus_raft::{
    ApplyMeta, Effect, Effects, Machine, MachineEvent, NodeId, RestoreError, Role, SubscriberId,
};
use serde::{Deserialize, Serialize};

/// A replicated map with the effects the runtime must carry out.
#[derive(Default, Serialize, Deserialize)]
pub struct Registry {
    pub values: BTreeMap<String, u64>,
    pub subscribers: Vec<SubscriberId>,
    pub timers_fired: Vec<String>,
    pub node_events: Vec<(u64, bool)>,
    pub applied: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Command {
    Put(String, u64),
    Subscribe(SubscriberId),
    SetTimer(String, u64),
    Monitor(u64),
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Query {
    Get(String),
    Len,
    TimersFired,
    NodeEvents,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Answer {
    Value(Option<u64>),
    Len(usize),
    Names(Vec<String>),
    Events(Vec<(u64, bool)>),
}

impl Machine for Registry {
    type Command = Command;
    type Reply = Option<u64>;
    type Query = Query;
    type QueryReply = Answer;
    type Message = (String, u64);

    fn apply(
        &mut self,
        _: &ApplyMeta,
        command: Command,
        effects: &mut Effects<Self>,
    ) -> Option<u64> {
        self.applied += 1;
        if self.applied % 1000 == 0 {
            effects.release_cursor();
        }
        match command {
            Command::Put(key, value) => {
                for subscriber in &self.subscribers {
                    effects.send(*subscriber, (key.clone(), value));
                }
                self.values.insert(key, value)
            }
            Command::Subscribe(id) => {
                self.subscribers.push(id);
                None
            }
            Command::SetTimer(name, after_ms) => {
                effects.push(Effect::Timer {
                    name,
                    after_ms: Some(after_ms),
                });
                None
            }
            Command::Monitor(node) => {
                effects.push(Effect::MonitorNode(NodeId(node)));
                None
            }
        }
    }

    fn event(&mut self, _: &ApplyMeta, event: MachineEvent, _: &mut Effects<Self>) {
        match event {
            MachineEvent::Timer { name } => self.timers_fired.push(name),
            MachineEvent::NodeDown(node) => self.node_events.push((node.0, false)),
            MachineEvent::NodeUp(node) => self.node_events.push((node.0, true)),
        }
    }

    fn state_enter(&mut self, _role: Role, _effects: &mut Effects<Self>) {}

    fn query(&self, query: &Query) -> Answer {
        match query {
            Query::Get(key) => Answer::Value(self.values.get(key).copied()),
            Query::Len => Answer::Len(self.values.len()),
            Query::TimersFired => Answer::Names(self.timers_fired.clone()),
            Query::NodeEvents => Answer::Events(self.node_events.clone()),
        }
    }

    fn snapshot(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }

    fn restore(data: &[u8]) -> Result<Self, RestoreError> {
        postcard::from_bytes(data).map_err(|e| RestoreError {
            reason: e.to_string(),
        })
    }
}

pub const KIND: &str = "registry";

pub fn register(node: &Node) {
    node.register_machine(KIND, |_config: &[u8]| Ok(Registry::default()));
}

/// Test timings: quick elections, quick failure detection.
pub fn config(id: u64, dir: &std::path::Path, storage: StorageMode) -> NodeConfig {
    let mut config = NodeConfig::new(NodeId(id), dir.join(format!("n{id}")));
    config.listen = Some("127.0.0.1:0".parse().expect("literal address"));
    config.storage = storage;
    config.cluster_token = 0xC0FFEE;
    config.election_timeout_ms = 300;
    config.heartbeat_interval_ms = 50;
    config.ping_interval_ms = 50;
    config.default_timeout_ms = 5_000;
    config
}

/// `count` nodes on loopback, all connected to each other.
pub async fn nodes(count: u64, dir: &std::path::Path, storage: StorageMode) -> Vec<Node> {
    nodes_with(count, dir, storage, |_| {}).await
}

/// [`nodes`], each node's config adjusted by `tweak` first.
pub async fn nodes_with(
    count: u64,
    dir: &std::path::Path,
    storage: StorageMode,
    tweak: impl Fn(&mut NodeConfig),
) -> Vec<Node> {
    let mut nodes = Vec::new();
    for id in 1..=count {
        let mut config = config(id, dir, storage.clone());
        tweak(&mut config);
        let node = Node::start(config).await.expect("node starts");
        register(&node);
        nodes.push(node);
    }
    connect(&nodes);
    wait_connected(&nodes).await;
    nodes
}

pub fn connect(nodes: &[Node]) {
    for a in nodes {
        for b in nodes {
            if a.id() != b.id() {
                a.add_peer(b.id(), b.local_addr().expect("listening"));
            }
        }
    }
}

pub async fn wait_connected(nodes: &[Node]) {
    wait_until(Duration::from_secs(10), || {
        nodes
            .iter()
            .all(|a| nodes.iter().all(|b| a.is_node_up(b.id())))
    })
    .await;
}

pub async fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met in {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub fn members(cluster: &str, nodes: &[u64]) -> Vec<ServerRef> {
    nodes
        .iter()
        .map(|n| ServerRef::new(format!("{cluster}-{n}"), NodeId(*n)))
        .collect()
}
