//! `chorus serve`'s settings: etcd's flags (same names, same meaning, so
//! scripts written for etcd start chorus unchanged) or the same keys in a
//! TOML file.

use std::collections::BTreeSet;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use chorus_raft::NodeId;
use chorus_sessions::{CleanerConfig, SessionsConfig};
use serde::Deserialize;

use crate::error::ServeError;

/// etcd's default `--max-request-bytes`: 1.5 MiB.
pub const MAX_REQUEST_BYTES_DEFAULT: usize = 1_572_864;

/// Whether this member bootstraps a new cluster or joins one that exists
/// (after `etcdctl member add`), as etcd's `--initial-cluster-state`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClusterState {
    #[default]
    New,
    Existing,
}

impl std::str::FromStr for ClusterState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "new" => Ok(ClusterState::New),
            "existing" => Ok(ClusterState::Existing),
            other => Err(format!(
                "initial-cluster-state must be \"new\" or \"existing\", not {other:?}"
            )),
        }
    }
}

/// Everything `chorus serve` needs. [`ServeConfig::default`] is etcd's
/// single-node default: member `default`, data in `./chorus-data`, clients
/// on 127.0.0.1:2379, peers on 127.0.0.1:2380.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct ServeConfig {
    /// This member's human-readable name (`--name`).
    pub name: String,
    pub data_dir: PathBuf,
    /// Where the gRPC API (and /health, /metrics) listens.
    pub listen_client_urls: Vec<String>,
    /// Client URLs this member tells the cluster about (MemberList).
    pub advertise_client_urls: Vec<String>,
    /// Where this member listens for its peers.
    pub listen_peer_urls: Vec<String>,
    /// This member's peer URLs as the others reach them; its member id
    /// derives from them and the cluster token, as in etcd.
    pub initial_advertise_peer_urls: Vec<String>,
    /// `name=peer-url,...` for every initial member; empty means this
    /// member alone (`{name}={initial-advertise-peer-urls}`).
    pub initial_cluster: String,
    pub initial_cluster_token: String,
    pub initial_cluster_state: ClusterState,
    /// More URLs serving only /health and /metrics.
    pub listen_metrics_urls: Vec<String>,
    /// Largest request accepted, bytes (etcd's `--max-request-bytes`).
    pub max_request_bytes: usize,
    /// Most operations in one txn level (etcd's `--max-txn-ops`).
    pub max_txn_ops: usize,
    /// Milliseconds (etcd's `--election-timeout`).
    pub election_timeout: u64,
    /// Milliseconds (etcd's `--heartbeat-interval`).
    pub heartbeat_interval: u64,
    /// Applied entries between snapshots of the key-value machine (etcd's
    /// `--snapshot-count`, with etcd 3.4's default: 100,000). Fewer
    /// means a shorter log to replay on restart and more frequent pauses
    /// while the whole machine state is encoded.
    pub snapshot_count: u64,
    /// Most client requests in progress at once on this member; more get
    /// etcd's "too many requests".
    pub max_concurrent_requests: usize,
    /// Where the sessions service keeps its keys (chorus's own).
    pub sessions_prefix: String,
    /// Milliseconds a session saved with a deadline in the past gets, and
    /// how far the cleaner extends an expired session that still has a
    /// live connection (chorus's own).
    pub sessions_default_validity: u64,
    /// Milliseconds between two clean-ups of expired sessions by the
    /// member that holds the cleaner role (chorus's own).
    pub sessions_clean_interval: u64,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            name: "default".into(),
            data_dir: PathBuf::from("chorus-data"),
            listen_client_urls: vec!["http://127.0.0.1:2379".into()],
            advertise_client_urls: vec!["http://127.0.0.1:2379".into()],
            listen_peer_urls: vec!["http://127.0.0.1:2380".into()],
            initial_advertise_peer_urls: vec!["http://127.0.0.1:2380".into()],
            initial_cluster: String::new(),
            initial_cluster_token: "etcd-cluster".into(),
            initial_cluster_state: ClusterState::New,
            listen_metrics_urls: Vec::new(),
            max_request_bytes: MAX_REQUEST_BYTES_DEFAULT,
            max_txn_ops: 128,
            election_timeout: 1_000,
            heartbeat_interval: 100,
            snapshot_count: 100_000,
            max_concurrent_requests: 65_536,
            sessions_prefix: SessionsConfig::default().prefix,
            sessions_default_validity: SessionsConfig::default().default_validity_ms,
            sessions_clean_interval: CleanerConfig::default().interval_ms,
        }
    }
}

/// One initial member: its name and peer URLs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitialMember {
    pub name: String,
    pub peer_urls: Vec<String>,
    pub id: NodeId,
}

impl ServeConfig {
    /// The sessions namespace's settings.
    pub fn sessions(&self) -> SessionsConfig {
        SessionsConfig {
            prefix: self.sessions_prefix.clone(),
            default_validity_ms: self.sessions_default_validity,
            ..SessionsConfig::default()
        }
    }

    /// The sessions cleaner's settings: this member holds it as `name`.
    pub fn sessions_cleaner(&self) -> CleanerConfig {
        CleanerConfig {
            holder: self.name.clone(),
            interval_ms: self.sessions_clean_interval,
            ..CleanerConfig::default()
        }
    }

    /// Reads a TOML file whose keys are the flag names (`name`,
    /// `data-dir`, `listen-client-urls = ["http://..."]`, ...).
    pub fn from_toml(text: &str) -> Result<ServeConfig, ServeError> {
        toml::from_str(text).map_err(|error| ServeError::Config(error.to_string()))
    }

    /// The checks that need no I/O.
    pub fn validate(&self) -> Result<(), ServeError> {
        let problem = |text: String| Err(ServeError::Config(text));
        if self.name.is_empty() {
            return problem("name must not be empty".into());
        }
        for (flag, urls) in [
            ("listen-client-urls", &self.listen_client_urls),
            ("listen-peer-urls", &self.listen_peer_urls),
            (
                "initial-advertise-peer-urls",
                &self.initial_advertise_peer_urls,
            ),
        ] {
            if urls.is_empty() {
                return problem(format!("{flag} needs at least one URL"));
            }
        }
        for url in self
            .listen_client_urls
            .iter()
            .chain(&self.advertise_client_urls)
            .chain(&self.listen_peer_urls)
            .chain(&self.initial_advertise_peer_urls)
            .chain(&self.listen_metrics_urls)
        {
            parse_url(url)?;
        }
        if self.listen_peer_urls.len() > 1 {
            return problem(
                "chorus listens for peers on one URL; give one listen-peer-urls".into(),
            );
        }
        if self.max_request_bytes == 0 || self.max_txn_ops == 0 {
            return problem("max-request-bytes and max-txn-ops must be positive".into());
        }
        if self.heartbeat_interval == 0 || self.election_timeout < 5 * self.heartbeat_interval {
            return problem(format!(
                "election-timeout ({} ms) must be at least 5 heartbeat-intervals ({} ms)",
                self.election_timeout, self.heartbeat_interval
            ));
        }
        if self.max_concurrent_requests == 0 {
            return problem("max-concurrent-requests must be positive".into());
        }
        if self.sessions_prefix.is_empty() {
            return problem("sessions-prefix must not be empty".into());
        }
        if self.sessions_default_validity == 0 || self.sessions_clean_interval == 0 {
            return problem(
                "sessions-default-validity and sessions-clean-interval must be positive".into(),
            );
        }
        self.initial_members()?;
        Ok(())
    }

    /// `--initial-cluster`, parsed, with each member's id.
    pub fn initial_members(&self) -> Result<Vec<InitialMember>, ServeError> {
        let text = if self.initial_cluster.trim().is_empty() {
            self.initial_advertise_peer_urls
                .iter()
                .map(|url| format!("{}={url}", self.name))
                .collect::<Vec<_>>()
                .join(",")
        } else {
            self.initial_cluster.clone()
        };
        let mut members: Vec<InitialMember> = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((name, url)) = part.split_once('=') else {
                return Err(ServeError::Config(format!(
                    "initial-cluster entry {part:?} is not name=peer-url"
                )));
            };
            parse_url(url)?;
            match members.iter_mut().find(|m| m.name == name) {
                Some(member) => member.peer_urls.push(url.to_string()),
                None => members.push(InitialMember {
                    name: name.to_string(),
                    peer_urls: vec![url.to_string()],
                    id: NodeId(0),
                }),
            }
        }
        let mut ids = BTreeSet::new();
        for member in &mut members {
            member.id = member_id(&member.peer_urls, &self.initial_cluster_token);
            if !ids.insert(member.id) {
                return Err(ServeError::Config(format!(
                    "two initial members share peer URLs {:?}",
                    member.peer_urls
                )));
            }
        }
        if !members.iter().any(|m| m.name == self.name) {
            return Err(ServeError::Config(format!(
                "initial-cluster has no member named {:?} (this member's --name)",
                self.name
            )));
        }
        Ok(members)
    }

    /// This member's id: derived from its advertised peer URLs and the
    /// cluster token (as etcd derives member ids), so a member added with
    /// `etcdctl member add --peer-urls` gets the id it will compute itself.
    pub fn member_id(&self) -> NodeId {
        member_id(
            &self.initial_advertise_peer_urls,
            &self.initial_cluster_token,
        )
    }
}

/// A member's id from its peer URLs and the cluster token: FNV-1a over
/// the sorted URLs and the token, folded to chorus-node's 32-bit node ids
/// (never 0). See docs/formats.md ("member ids").
pub fn member_id(peer_urls: &[String], token: &str) -> NodeId {
    let mut urls: Vec<&str> = peer_urls.iter().map(String::as_str).collect();
    urls.sort_unstable();
    let text = format!("{}\n{token}", urls.join("\n"));
    let hash = chorus_node::cluster_id(&text).0;
    let folded = (hash ^ (hash >> 32)) & chorus_node::NODE_ID_MAX;
    NodeId(folded.max(1))
}

/// `http://host:port` to a socket address (`localhost` and names resolve).
pub fn parse_url(url: &str) -> Result<SocketAddr, ServeError> {
    let bad = |why: &str| ServeError::Config(format!("URL {url:?}: {why}"));
    let rest = if let Some(rest) = url.strip_prefix("http://") {
        rest
    } else if url.starts_with("https://") || url.starts_with("unixs://") {
        return Err(bad("TLS is not supported yet; use http://"));
    } else {
        return Err(bad("expected http://host:port"));
    };
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.rsplit_once(':').is_none() {
        return Err(bad("a port is required"));
    }
    authority
        .to_socket_addrs()
        .map_err(|error| bad(&error.to_string()))?
        .next()
        .ok_or_else(|| bad("the host resolves to no address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_a_single_etcd_style_member() {
        let config = ServeConfig::default();
        config.validate().unwrap();
        let members = config.initial_members().unwrap();
        assert_eq!(members.len(), 1);
        assert_eq!(members[0].name, "default");
        assert_eq!(members[0].id, config.member_id());
    }

    #[test]
    fn initial_cluster_members_get_the_ids_they_compute_themselves() {
        let mut config = ServeConfig {
            name: "b".into(),
            initial_cluster: "a=http://127.0.0.1:12380,b=http://127.0.0.1:22380".into(),
            initial_advertise_peer_urls: vec!["http://127.0.0.1:22380".into()],
            ..ServeConfig::default()
        };
        let members = config.initial_members().unwrap();
        assert_eq!(members[1].id, config.member_id());
        assert_ne!(members[0].id, members[1].id);
        config.initial_cluster_token = "other".into();
        assert_ne!(config.initial_members().unwrap()[1].id, members[1].id);
    }

    #[test]
    fn bad_settings_are_refused_with_a_reason() {
        let bad = |config: ServeConfig| config.validate().unwrap_err().to_string();
        assert!(bad(ServeConfig {
            initial_cluster: "x=http://127.0.0.1:1".into(),
            ..ServeConfig::default()
        })
        .contains("no member named"));
        assert!(bad(ServeConfig {
            listen_client_urls: vec!["https://127.0.0.1:2379".into()],
            ..ServeConfig::default()
        })
        .contains("TLS"));
        assert!(bad(ServeConfig {
            initial_cluster: "default".into(),
            ..ServeConfig::default()
        })
        .contains("name=peer-url"));
        assert!(bad(ServeConfig {
            election_timeout: 100,
            ..ServeConfig::default()
        })
        .contains("heartbeat"));
        assert!(bad(ServeConfig {
            sessions_prefix: String::new(),
            ..ServeConfig::default()
        })
        .contains("sessions-prefix"));
        assert!(bad(ServeConfig {
            sessions_clean_interval: 0,
            ..ServeConfig::default()
        })
        .contains("positive"));
    }

    #[test]
    fn toml_uses_the_flag_names() {
        let config = ServeConfig::from_toml(
            "name = \"n1\"\ndata-dir = \"/tmp/x\"\nlisten-client-urls = [\"http://127.0.0.1:3379\"]\ninitial-cluster-state = \"existing\"\n",
        )
        .unwrap();
        assert_eq!(config.name, "n1");
        assert_eq!(config.initial_cluster_state, ClusterState::Existing);
        let sessions = ServeConfig::from_toml("sessions-default-validity = 5000\n").unwrap();
        assert_eq!(sessions.sessions().default_validity_ms, 5_000);
        assert_eq!(
            config.listen_peer_urls,
            ServeConfig::default().listen_peer_urls
        );
        assert!(ServeConfig::from_toml("nmae = \"typo\"").is_err());
    }
}
