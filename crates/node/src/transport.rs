//! One TCP connection per peer node, carrying every server's traffic, and
//! node-level failure detection.
//!
//! * The node with the lower id dials, the other accepts, so a pair shares
//!   exactly one connection. A dialer that finds the peer refusing
//!   connections reports it down at once (its process is gone); otherwise a
//!   phi-accrual detector over per-pair pings decides, and a connection lost
//!   for longer than two ping intervals counts as down too.
//! * Outgoing frames wait in a bounded queue per peer; the writer drains
//!   everything queued into one buffer and one `write` (batching across
//!   servers). Frames for a peer that is not connected, or whose queue is
//!   full, are dropped and counted: Raft resends, and requests fail fast.
//! * Requests to other nodes ([`Transport::request`]) wait for their
//!   response with a timeout, and fail as soon as the peer is reported down.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::BytesMut;
use chorus_membership::{PhiAccrualDetector, PhiConfig};
use chorus_raft::NodeId;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};

use crate::clock::Clock;
use crate::rpc::{NodeRequest, NodeResponse};
use crate::wire::{decode_frame, encode_frame, Frame, Hello, HELLO_BYTES, PROTOCOL_VERSION};

/// How long a handshake may take before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a dial may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Pause between failed dials (loopback and LAN: reconnect quickly).
const REDIAL_BACKOFF: Duration = Duration::from_millis(50);
/// Bytes read from a socket per system call.
const READ_CHUNK_BYTES: usize = 256 << 10;

/// What the transport hands to the node.
pub(crate) trait Inbound: Send + Sync + 'static {
    /// A frame other than pings and responses arrived from `from`.
    fn frame(&self, from: NodeId, frame: Frame);
    /// `node` was judged down (`up == false`) or reachable again.
    fn liveness(&self, node: NodeId, up: bool);
}

#[derive(Clone, Debug)]
pub(crate) struct TransportConfig {
    pub node: NodeId,
    pub cluster_token: u64,
    pub ping_interval_ms: u64,
    pub phi_threshold: f64,
    pub phi_min_std_deviation_ms: f64,
    pub peer_queue_capacity: usize,
    pub write_batch_bytes_max: usize,
}

/// Counters for `overview`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TransportStats {
    pub frames_sent: u64,
    pub frames_received: u64,
    pub bytes_sent: u64,
    /// Frames dropped because the peer was not connected or its queue was
    /// full.
    pub frames_dropped: u64,
    pub connections_opened: u64,
    pub handshakes_refused: u64,
}

struct Peer {
    addr: Mutex<Option<SocketAddr>>,
    /// The current connection's queue, if connected.
    sender: Mutex<Option<mpsc::Sender<Frame>>>,
    detector: Mutex<PhiAccrualDetector>,
    /// As last reported to the node.
    up: AtomicBool,
    /// When the connection was lost (ms), if it is lost.
    disconnected_ms: Mutex<Option<u64>>,
    /// Bumped by every new connection, so an old connection's exit does not
    /// clear its successor.
    generation: AtomicU64,
}

struct Counters {
    frames_sent: AtomicU64,
    frames_received: AtomicU64,
    bytes_sent: AtomicU64,
    frames_dropped: AtomicU64,
    connections_opened: AtomicU64,
    handshakes_refused: AtomicU64,
}

pub(crate) struct Transport {
    config: TransportConfig,
    clock: Clock,
    inbound: Arc<dyn Inbound>,
    peers: Mutex<HashMap<NodeId, Arc<Peer>>>,
    pending: Mutex<HashMap<u64, (NodeId, oneshot::Sender<NodeResponse>)>>,
    next_request: AtomicU64,
    counters: Counters,
    shutdown: watch::Receiver<bool>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}

impl Transport {
    pub(crate) fn new(
        config: TransportConfig,
        clock: Clock,
        inbound: Arc<dyn Inbound>,
        shutdown: watch::Receiver<bool>,
    ) -> Arc<Transport> {
        Arc::new(Transport {
            config,
            clock,
            inbound,
            peers: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
            next_request: AtomicU64::new(1),
            counters: Counters {
                frames_sent: AtomicU64::new(0),
                frames_received: AtomicU64::new(0),
                bytes_sent: AtomicU64::new(0),
                frames_dropped: AtomicU64::new(0),
                connections_opened: AtomicU64::new(0),
                handshakes_refused: AtomicU64::new(0),
            },
            shutdown,
        })
    }

    fn hello(&self) -> Hello {
        Hello {
            version: PROTOCOL_VERSION,
            cluster_token: self.config.cluster_token,
            node: self.config.node,
        }
    }

    fn phi_config(&self) -> PhiConfig {
        PhiConfig {
            threshold: self.config.phi_threshold,
            min_std_deviation_ms: self.config.phi_min_std_deviation_ms,
            first_heartbeat_estimate_ms: self.config.ping_interval_ms,
            ..PhiConfig::default()
        }
    }

    fn peer(&self, node: NodeId) -> Arc<Peer> {
        let mut peers = lock(&self.peers);
        Arc::clone(peers.entry(node).or_insert_with(|| {
            Arc::new(Peer {
                addr: Mutex::new(None),
                sender: Mutex::new(None),
                detector: Mutex::new(PhiAccrualDetector::new(self.phi_config())),
                up: AtomicBool::new(false),
                disconnected_ms: Mutex::new(None),
                generation: AtomicU64::new(0),
            })
        }))
    }

    /// Registers a peer node's address; the lower id dials.
    pub(crate) fn add_peer(self: &Arc<Self>, node: NodeId, addr: SocketAddr) {
        let peer = self.peer(node);
        let previous = lock(&peer.addr).replace(addr);
        if previous.is_none() && self.config.node < node {
            let transport = Arc::clone(self);
            tokio::spawn(async move { transport.dial_loop(node, peer).await });
        }
    }

    /// Whether `node` is currently believed reachable.
    pub(crate) fn is_up(&self, node: NodeId) -> bool {
        lock(&self.peers)
            .get(&node)
            .is_some_and(|peer| peer.up.load(Ordering::Relaxed))
    }

    /// Every peer node known (from the config or [`Transport::add_peer`])
    /// and whether it is believed up, by id.
    pub(crate) fn peers(&self) -> Vec<(NodeId, bool)> {
        let mut peers: Vec<(NodeId, bool)> = lock(&self.peers)
            .iter()
            .map(|(node, peer)| (*node, peer.up.load(Ordering::Relaxed)))
            .collect();
        peers.sort();
        peers
    }

    pub(crate) fn stats(&self) -> TransportStats {
        let c = &self.counters;
        TransportStats {
            frames_sent: c.frames_sent.load(Ordering::Relaxed),
            frames_received: c.frames_received.load(Ordering::Relaxed),
            bytes_sent: c.bytes_sent.load(Ordering::Relaxed),
            frames_dropped: c.frames_dropped.load(Ordering::Relaxed),
            connections_opened: c.connections_opened.load(Ordering::Relaxed),
            handshakes_refused: c.handshakes_refused.load(Ordering::Relaxed),
        }
    }

    /// Queues a frame for `node`; dropped (and counted) when not connected
    /// or the queue is full.
    pub(crate) fn send(&self, node: NodeId, frame: Frame) -> bool {
        let sender = lock(&self.peers)
            .get(&node)
            .and_then(|peer| lock(&peer.sender).clone());
        let sent = sender.is_some_and(|sender| sender.try_send(frame).is_ok());
        if !sent {
            self.counters.frames_dropped.fetch_add(1, Ordering::Relaxed);
        }
        sent
    }

    /// Sends a request to another node and waits for its response.
    pub(crate) async fn request(
        &self,
        node: NodeId,
        request: NodeRequest,
        timeout: Duration,
    ) -> Result<NodeResponse, RequestFailure> {
        let id = self.next_request.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(id, (node, tx));
        if !self.send(node, Frame::Request { id, request }) {
            lock(&self.pending).remove(&id);
            return Err(RequestFailure::NodeDown(node));
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(response)) => Ok(response),
            // The waiter was dropped: the peer was reported down.
            Ok(Err(_)) => Err(RequestFailure::NodeDown(node)),
            Err(_) => {
                lock(&self.pending).remove(&id);
                Err(RequestFailure::TimedOut)
            }
        }
    }

    /// Starts accepting connections on `listener`.
    pub(crate) fn serve(self: &Arc<Self>, listener: TcpListener) {
        let transport = Arc::clone(self);
        tokio::spawn(async move {
            let mut shutdown = transport.shutdown.clone();
            loop {
                let accepted = tokio::select! {
                    accepted = listener.accept() => accepted,
                    _ = shutdown.changed() => return,
                };
                match accepted {
                    Ok((stream, _)) => {
                        let transport = Arc::clone(&transport);
                        // A connection's failure never reaches the accept loop.
                        tokio::spawn(async move { transport.accept(stream).await });
                    }
                    Err(error) => {
                        tracing::warn!(%error, "accepting a peer connection failed");
                        tokio::time::sleep(REDIAL_BACKOFF).await;
                    }
                }
            }
        });
    }

    /// Starts judging peers' liveness.
    pub(crate) fn start_liveness(self: &Arc<Self>) {
        let transport = Arc::clone(self);
        tokio::spawn(async move { transport.liveness_loop().await });
    }

    async fn accept(self: Arc<Self>, mut stream: TcpStream) {
        let local = self.hello();
        let peer_hello = match read_hello(&mut stream).await {
            Ok(hello) => hello,
            Err(reason) => {
                tracing::warn!(%reason, "peer handshake failed");
                return;
            }
        };
        let refusal = peer_hello.refusal(&local, None);
        let mut answer = local.encode().to_vec();
        match &refusal {
            None => answer.push(0),
            Some(reason) => {
                answer.push(1);
                let reason = truncate(reason);
                answer.extend_from_slice(&(reason.len() as u16).to_le_bytes());
                answer.extend_from_slice(reason.as_bytes());
            }
        }
        if stream.write_all(&answer).await.is_err() {
            return;
        }
        if let Some(reason) = refusal {
            self.counters
                .handshakes_refused
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(peer = peer_hello.node.0, %reason, "refused a peer connection");
            return;
        }
        self.run_connection(peer_hello.node, stream).await;
    }

    async fn dial_loop(self: Arc<Self>, node: NodeId, peer: Arc<Peer>) {
        let mut shutdown = self.shutdown.clone();
        loop {
            if *shutdown.borrow() {
                return;
            }
            let Some(addr) = *lock(&peer.addr) else {
                return;
            };
            match self.dial(node, addr).await {
                Ok(stream) => self.run_connection(node, stream).await,
                Err(DialError::Refused(reason)) => {
                    tracing::error!(peer = node.0, %addr, %reason, "peer refused the handshake");
                    self.counters
                        .handshakes_refused
                        .fetch_add(1, Ordering::Relaxed);
                    // A misconfigured peer will not fix itself quickly.
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                        _ = shutdown.changed() => return,
                    }
                    continue;
                }
                Err(DialError::Unreachable(reason)) => {
                    // Nobody listens there: the process is gone.
                    tracing::debug!(peer = node.0, %addr, %reason, "peer unreachable");
                    self.mark(node, &peer, false);
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(REDIAL_BACKOFF) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    async fn dial(&self, node: NodeId, addr: SocketAddr) -> Result<TcpStream, DialError> {
        let connect = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr));
        let mut stream = match connect.await {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => return Err(DialError::Unreachable(error.to_string())),
            Err(_) => return Err(DialError::Unreachable("connect timed out".into())),
        };
        let local = self.hello();
        stream
            .write_all(&local.encode())
            .await
            .map_err(|e| DialError::Unreachable(e.to_string()))?;
        let peer_hello = read_hello(&mut stream)
            .await
            .map_err(DialError::Unreachable)?;
        let status = read_u8(&mut stream).await.map_err(DialError::Unreachable)?;
        if status != 0 {
            let reason = read_reason(&mut stream)
                .await
                .unwrap_or_else(|e| format!("(unreadable reason: {e})"));
            return Err(DialError::Refused(reason));
        }
        if let Some(reason) = peer_hello.refusal(&local, Some(node)) {
            return Err(DialError::Refused(reason));
        }
        Ok(stream)
    }

    /// Runs one established connection until it fails or is replaced.
    async fn run_connection(self: &Arc<Self>, node: NodeId, stream: TcpStream) {
        let _ = stream.set_nodelay(true);
        let peer = self.peer(node);
        let (tx, rx) = mpsc::channel(self.config.peer_queue_capacity);
        let generation = peer.generation.fetch_add(1, Ordering::SeqCst) + 1;
        // A fresh detector: the time the peer was away is not an interval.
        *lock(&peer.detector) = PhiAccrualDetector::new(self.phi_config());
        lock(&peer.detector).heartbeat(self.clock.now_ms());
        *lock(&peer.sender) = Some(tx);
        *lock(&peer.disconnected_ms) = None;
        self.counters
            .connections_opened
            .fetch_add(1, Ordering::Relaxed);
        tracing::info!(peer = node.0, "connected to peer node");
        self.mark(node, &peer, true);

        let (reader, writer) = stream.into_split();
        let mut shutdown = self.shutdown.clone();
        tokio::select! {
            result = self.read_loop(node, &peer, reader) => {
                if let Err(reason) = result {
                    tracing::info!(peer = node.0, %reason, "peer connection closed");
                }
            }
            result = self.write_loop(rx, writer) => {
                if let Err(reason) = result {
                    tracing::info!(peer = node.0, %reason, "peer connection closed");
                }
            }
            _ = shutdown.changed() => {}
        }
        if peer.generation.load(Ordering::SeqCst) == generation {
            *lock(&peer.sender) = None;
            *lock(&peer.disconnected_ms) = Some(self.clock.now_ms());
        }
    }

    async fn read_loop(
        &self,
        node: NodeId,
        peer: &Peer,
        mut reader: tokio::net::tcp::OwnedReadHalf,
    ) -> Result<(), String> {
        let mut buf = BytesMut::with_capacity(READ_CHUNK_BYTES);
        loop {
            if buf.capacity() - buf.len() < READ_CHUNK_BYTES / 4 {
                buf.reserve(READ_CHUNK_BYTES);
            }
            let read = reader.read_buf(&mut buf).await.map_err(|e| e.to_string())?;
            if read == 0 {
                return Err("closed by peer".into());
            }
            loop {
                let frame = match decode_frame(&mut buf) {
                    Ok(Some(frame)) => frame,
                    Ok(None) => break,
                    Err(error) => {
                        // Bad bytes from the network: drop the connection,
                        // never the node.
                        tracing::error!(peer = node.0, %error, "dropping connection");
                        return Err(error.to_string());
                    }
                };
                self.counters
                    .frames_received
                    .fetch_add(1, Ordering::Relaxed);
                match frame {
                    Frame::Ping => lock(&peer.detector).heartbeat(self.clock.now_ms()),
                    Frame::Response { id, response } => {
                        let waiter = lock(&self.pending).remove(&id);
                        if let Some((_, tx)) = waiter {
                            let _ = tx.send(response);
                        }
                    }
                    other => self.inbound.frame(node, other),
                }
            }
        }
    }

    async fn write_loop(
        &self,
        mut rx: mpsc::Receiver<Frame>,
        mut writer: tokio::net::tcp::OwnedWriteHalf,
    ) -> Result<(), String> {
        let ping_every = Duration::from_millis(self.config.ping_interval_ms);
        let mut ping = tokio::time::interval(ping_every);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut buf = BytesMut::with_capacity(64 << 10);
        loop {
            let first = tokio::select! {
                frame = rx.recv() => match frame {
                    Some(frame) => frame,
                    None => return Ok(()), // replaced by a newer connection
                },
                _ = ping.tick() => Frame::Ping,
            };
            let mut frames = 1u64;
            encode_frame(&first, &mut buf).map_err(|e| e.to_string())?;
            while buf.len() < self.config.write_batch_bytes_max {
                match rx.try_recv() {
                    Ok(frame) => {
                        if let Err(error) = encode_frame(&frame, &mut buf) {
                            tracing::error!(%error, "frame not sent");
                            continue;
                        }
                        frames += 1;
                    }
                    Err(_) => break,
                }
            }
            writer.write_all(&buf).await.map_err(|e| e.to_string())?;
            self.counters
                .bytes_sent
                .fetch_add(buf.len() as u64, Ordering::Relaxed);
            self.counters
                .frames_sent
                .fetch_add(frames, Ordering::Relaxed);
            buf.clear();
        }
    }

    /// Judges every peer's liveness twice per ping interval.
    async fn liveness_loop(self: Arc<Self>) {
        let mut shutdown = self.shutdown.clone();
        let period = Duration::from_millis((self.config.ping_interval_ms / 2).max(1));
        let mut interval = tokio::time::interval(period);
        loop {
            tokio::select! {
                _ = interval.tick() => {}
                _ = shutdown.changed() => return,
            }
            let now = self.clock.now_ms();
            let peers: Vec<(NodeId, Arc<Peer>)> = lock(&self.peers)
                .iter()
                .map(|(node, peer)| (*node, Arc::clone(peer)))
                .collect();
            for (node, peer) in peers {
                let connected = lock(&peer.sender).is_some();
                let lost_for_ms = lock(&peer.disconnected_ms).map(|at| now.saturating_sub(at));
                let silent = lock(&peer.detector).phi(now) >= self.config.phi_threshold;
                let down = !connected
                    && lost_for_ms.is_none_or(|ms| ms > 2 * self.config.ping_interval_ms)
                    || silent;
                self.mark(node, &peer, !down);
            }
        }
    }

    /// Records and reports a liveness change.
    fn mark(&self, node: NodeId, peer: &Peer, up: bool) {
        if peer.up.swap(up, Ordering::SeqCst) == up {
            return;
        }
        if up {
            tracing::info!(peer = node.0, "peer node is up");
        } else {
            tracing::warn!(peer = node.0, "peer node is down");
            // Requests waiting on it fail now rather than at their timeout.
            lock(&self.pending).retain(|_, (target, _)| *target != node);
        }
        self.inbound.liveness(node, up);
    }
}

/// Why a request to another node got no response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RequestFailure {
    NodeDown(NodeId),
    TimedOut,
}

enum DialError {
    /// Nobody answered: the node is down.
    Unreachable(String),
    /// Somebody answered and refused us: misconfiguration.
    Refused(String),
}

fn truncate(reason: &str) -> &str {
    let mut end = reason.len().min(crate::wire::REFUSAL_BYTES_MAX);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

async fn read_hello(stream: &mut TcpStream) -> Result<Hello, String> {
    let mut bytes = [0u8; HELLO_BYTES];
    tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.read_exact(&mut bytes))
        .await
        .map_err(|_| "handshake timed out".to_string())?
        .map_err(|e| e.to_string())?;
    Hello::decode(&bytes).map_err(|e| e.to_string())
}

async fn read_u8(stream: &mut TcpStream) -> Result<u8, String> {
    tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.read_u8())
        .await
        .map_err(|_| "handshake timed out".to_string())?
        .map_err(|e| e.to_string())
}

async fn read_reason(stream: &mut TcpStream) -> Result<String, String> {
    let len = tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.read_u16_le())
        .await
        .map_err(|_| "handshake timed out".to_string())?
        .map_err(|e| e.to_string())? as usize;
    if len > crate::wire::REFUSAL_BYTES_MAX {
        return Err(format!("refusal reason of {len} bytes"));
    }
    let mut bytes = vec![0u8; len];
    tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.read_exact(&mut bytes))
        .await
        .map_err(|_| "handshake timed out".to_string())?
        .map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}
