//! # chorus-membership
//!
//! Who is in the cluster, where they run, and whether they are up.
//!
//! * **Membership** ([`membership`], [`crdt`]): classy's membership CRDT. Sites
//!   are persistent identities ([`SiteId`], stored once in the data dir), nodes
//!   are addresses ([`NodeAddr`]), clusters are named by a [`ClusterId`]. The
//!   state is last-writer-wins ops ordered by `(clock, magic, origin)` over the
//!   keys `membership(site)` and `host(site)`, plus a compact `forget(site)`
//!   tombstone so a kicked-and-forgotten site can never be resurrected by a
//!   stale peer, and metadata stays bounded (one op per key).
//! * **Gossip** ([`gossip`], [`wire`]): a sans-IO anti-entropy core exchanging
//!   digests and deltas (push-pull, `O(log N)` rounds), which also carries
//!   heartbeats for the failure detector.
//! * **Failure detection** ([`detector`]): the phi-accrual detector, the one
//!   failure detector in chorus, reusable by the node runtime for Raft.
//! * **Node tracker** ([`tracker`]): Beethoven's table of
//!   `(service, node, online|offline, last_change)` rows with subscriptions.
//!
//! ## Where it sits
//!
//! `chorus-node` (the runtime: tokio, sockets, timers) depends on this crate
//! and drives it; nothing here depends on another chorus crate. Like
//! `chorus-raft`, the core is **pure**: no clock, no global randomness, no I/O
//! (the one exception is [`SiteId::load_or_create`], the site file). Time is a
//! `now_ms` argument and randomness an injected `&mut impl Rng`, so a
//! simulation replays exactly from a seed (`tests/simulation.rs`).
//!
//! ## Driver loop
//!
//! 1. Load or create the site id once: `SiteId::load_or_create(data_dir, rng)`.
//! 2. Build a [`GossipNode`]: [`GossipNode::found`] for the first site,
//!    [`GossipNode::joining`] with seed addresses for the others.
//! 3. Every `gossip_interval_ms`, call [`GossipNode::on_tick`] and send each
//!    [`Outgoing`] (encode with [`wire::encode`]); delivery is best effort.
//! 4. For every datagram received, call [`GossipNode::on_bytes`] and send the
//!    replies it returns.
//! 5. Drain [`GossipNode::drain_status_changes`] into the [`Tracker`], and call
//!    `membership_mut().flush(now_ms)` to deliver membership events and hooks.
//!
//! ```
//! use chorus_membership::{
//!     wire, ClusterId, GossipConfig, GossipNode, Mode, NodeAddr, NodeStatus, SiteId, Tracker,
//!     TrackerConfig,
//! };
//! use rand::SeedableRng;
//!
//! let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(42);
//! let cluster = ClusterId::new("prod");
//! let config = GossipConfig { gossip_interval_ms: 100, ..GossipConfig::default() };
//! // Step 1-2: two sites (a real node would use SiteId::load_or_create).
//! let mut a = GossipNode::found(
//!     cluster.clone(), SiteId(1), NodeAddr::new("10.0.0.1:4100"), config.clone(), 0, &mut rng,
//! );
//! let mut b = GossipNode::joining(
//!     cluster, SiteId(2), NodeAddr::new("10.0.0.2:4100"),
//!     vec![NodeAddr::new("10.0.0.1:4100")], config,
//! );
//! let mut tracker = Tracker::new(Mode::Clustered, a.node().clone(), TrackerConfig::default(), 0);
//! let mut alerts = tracker.alert_me();
//!
//! for round in 0..20u64 {
//!     let now_ms = round * 100;
//!     // Step 3: tick both sites.
//!     let mut in_flight: Vec<_> = a.on_tick(now_ms, &mut rng);
//!     in_flight.extend(b.on_tick(now_ms, &mut rng));
//!     // Step 4: deliver through the wire format until no replies are left.
//!     while let Some(message) = in_flight.pop() {
//!         let bytes = wire::encode(&message.envelope).expect("small message");
//!         let receiver = if message.to_node == *a.node() { &mut a } else { &mut b };
//!         in_flight.extend(receiver.on_bytes(&bytes, now_ms, &mut rng).expect("valid bytes"));
//!     }
//!     // Step 5: status changes into the tracker, membership events out.
//!     for change in a.drain_status_changes() {
//!         tracker.apply_status_change(&change);
//!     }
//!     a.membership_mut().flush(now_ms);
//!     b.membership_mut().flush(now_ms);
//! }
//! assert_eq!(a.membership().members().sites, vec![SiteId(1), SiteId(2)]);
//! assert_eq!(a.membership().crdt().ops(), b.membership().crdt().ops());
//! assert_eq!(a.status_of(SiteId(2)), Some(NodeStatus::Online));
//! let update = alerts.try_next().expect("b came online");
//! assert_eq!((update.node.0.as_str(), update.status), ("10.0.0.2:4100", NodeStatus::Online));
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod crdt;
pub mod detector;
pub mod events;
pub mod gossip;
pub mod membership;
pub mod sim;
pub mod site;
pub mod tracker;
pub mod wire;

pub use crdt::{Clock, Crdt, CrdtLimits, Delta, Digest, Key, KeyKind, Op, OpOrder, Value};
pub use detector::{FailureReport, NodeStatus, PhiAccrualDetector, PhiConfig};
pub use events::{MembershipEvent, NodeUpdate, RowOp, StatusChange, TrackerEvent, TrackerRow};
pub use gossip::{GossipConfig, GossipDump, GossipNode, GossipStats, JoinState, Outgoing};
pub use membership::{
    Listing, Members, MembersWarning, Membership, MembershipConfig, MembershipDump,
    MembershipError, MembershipRegistry, SyncData,
};
pub use site::{ClusterId, NodeAddr, SiteFileError, SiteId};
pub use tracker::{
    until_ready, AlertStream, Mode, Subscription, SubscriptionKind, Tracker, TrackerConfig,
    TrackerError,
};
pub use wire::{Envelope, Message, RejectReason, WireError};
