//! `chorus sessions ...`: the sessions API (`chorus.sessions.v1`) from
//! the command line. Each command is one RPC to the first endpoint that
//! answers; output is one `key=value` line per session or connection,
//! so scripts can cut it.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use chorus_server::pb::sessions as pb;
use chorus_server::pb::sessions::sessions_client::SessionsClient;
use clap::{Args, Subcommand};
use tonic::transport::Channel;

/// Longest wait for a connection to one endpoint.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest wait for one answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Args)]
pub(crate) struct SessionsArgs {
    /// Comma-separated client URLs of members to ask.
    #[arg(long, default_value = "http://127.0.0.1:2379", global = true)]
    endpoints: String,
    #[command(subcommand)]
    command: SessionsCommand,
}

#[derive(Subcommand)]
enum SessionsCommand {
    /// Create or overwrite a session; prints it.
    Save {
        /// The session's UUID (default: a new one).
        #[arg(long)]
        id: Option<String>,
        /// Deadline in ms since the Unix epoch (0 or past: the default
        /// validity from now).
        #[arg(long, default_value_t = 0)]
        valid_to_ms: u64,
        #[arg(long, default_value = "")]
        owner: String,
        /// Only if the stored session is this incarnation.
        #[arg(long, default_value_t = 0)]
        fence: i64,
    },
    /// Print one session.
    Get {
        id: String,
        /// Read the store rather than the member's cache.
        #[arg(long)]
        update_before: bool,
    },
    /// Print the sessions valid at or after a time.
    List {
        #[arg(long, default_value_t = 0)]
        valid_from_ms: u64,
    },
    /// Delete a session and its connections (not closed).
    Remove { id: String },
    /// Delete a session and its connections, closing them.
    Close {
        id: String,
        #[arg(long, default_value_t = 0)]
        fence: i64,
    },
    /// A session's connections.
    #[command(subcommand)]
    Connections(ConnectionsCommand),
    /// Run the clean-up of expired sessions now.
    Clear,
    /// Cluster state documents.
    #[command(subcommand)]
    State(StateCommand),
}

#[derive(Subcommand)]
enum ConnectionsCommand {
    Save {
        session: String,
        #[arg(long)]
        id: Option<String>,
        #[arg(long, default_value = "")]
        data: String,
        #[arg(long, default_value_t = 0)]
        fence: i64,
    },
    Get {
        session: String,
        id: String,
    },
    List {
        session: String,
    },
    Remove {
        session: String,
        id: String,
    },
    Close {
        session: String,
        id: String,
    },
}

#[derive(Subcommand)]
enum StateCommand {
    /// Print a document (default id: cluster_state).
    Get {
        #[arg(long, default_value = "")]
        id: String,
    },
    /// Store a document (default id: cluster_state), replacing it.
    Save {
        value: String,
        #[arg(long, default_value = "")]
        id: String,
    },
    /// Delete a document (default id: cluster_state).
    Clear {
        #[arg(long, default_value = "")]
        id: String,
    },
}

fn print_session(session: Option<pb::Session>) {
    let session = session.unwrap_or_default();
    println!(
        "id={} valid_to_ms={} fence={} revision={} owner={}",
        session.id,
        session.valid_to_ms,
        session.fence,
        session.revision,
        String::from_utf8_lossy(&session.owner)
    );
}

fn print_connection(connection: Option<pb::Connection>) {
    let connection = connection.unwrap_or_default();
    println!(
        "session={} id={} revision={} data={}",
        connection.session,
        connection.id,
        connection.revision,
        String::from_utf8_lossy(&connection.data)
    );
}

async fn connect(endpoints: &str) -> Result<SessionsClient<Channel>> {
    let mut last = None;
    for url in crate::urls(endpoints) {
        let endpoint = tonic::transport::Endpoint::from_shared(url.clone())
            .with_context(|| format!("bad endpoint {url:?}"))?
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT);
        match endpoint.connect().await {
            Ok(channel) => return Ok(SessionsClient::new(channel)),
            Err(error) => last = Some(format!("{url}: {error}")),
        }
    }
    match last {
        Some(error) => bail!("no endpoint answered (last: {error})"),
        None => bail!("no endpoints given"),
    }
}

/// A failed RPC as the error the binary prints.
fn failed(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{:?}: {}", status.code(), status.message())
}

pub(crate) fn run(args: SessionsArgs) -> Result<()> {
    crate::runtime()?.block_on(async move {
        let mut client = connect(&args.endpoints).await?;
        match args.command {
            SessionsCommand::Save {
                id,
                valid_to_ms,
                owner,
                fence,
            } => {
                let reply = client
                    .save_session(pb::SaveSessionRequest {
                        id: id.unwrap_or_default(),
                        valid_to_ms,
                        owner: owner.into_bytes().into(),
                        fence,
                    })
                    .await
                    .map_err(failed)?;
                print_session(reply.into_inner().session);
            }
            SessionsCommand::Get { id, update_before } => {
                let reply = client
                    .get_session(pb::GetSessionRequest { id, update_before })
                    .await
                    .map_err(failed)?;
                print_session(reply.into_inner().session);
            }
            SessionsCommand::List { valid_from_ms } => {
                let reply = client
                    .list_sessions(pb::ListSessionsRequest { valid_from_ms })
                    .await
                    .map_err(failed)?;
                for session in reply.into_inner().sessions {
                    print_session(Some(session));
                }
            }
            SessionsCommand::Remove { id } => {
                client
                    .remove_session(pb::SessionRequest { id, fence: 0 })
                    .await
                    .map_err(failed)?;
            }
            SessionsCommand::Close { id, fence } => {
                let reply = client
                    .close_session(pb::SessionRequest { id, fence })
                    .await
                    .map_err(failed)?;
                for connection in reply.into_inner().closed {
                    print_connection(Some(connection));
                }
            }
            SessionsCommand::Connections(command) => connections(&mut client, command).await?,
            SessionsCommand::Clear => {
                let reply = client
                    .clear_sessions(pb::ClearSessionsRequest {})
                    .await
                    .map_err(failed)?
                    .into_inner();
                println!(
                    "extended={} deleted={} skipped={} connections_closed={} corrupt={}",
                    reply.extended.join(","),
                    reply.deleted.join(","),
                    reply.skipped.join(","),
                    reply.connections_closed,
                    reply.corrupt.join(",")
                );
            }
            SessionsCommand::State(command) => match command {
                StateCommand::Get { id } => {
                    let reply = client
                        .get_state(pb::StateRequest { id })
                        .await
                        .map_err(failed)?;
                    println!("{}", String::from_utf8_lossy(&reply.into_inner().value));
                }
                StateCommand::Save { value, id } => {
                    client
                        .save_state(pb::SaveStateRequest {
                            id,
                            value: value.into_bytes().into(),
                        })
                        .await
                        .map_err(failed)?;
                }
                StateCommand::Clear { id } => {
                    client
                        .clear_state(pb::StateRequest { id })
                        .await
                        .map_err(failed)?;
                }
            },
        }
        Ok(())
    })
}

async fn connections(
    client: &mut SessionsClient<Channel>,
    command: ConnectionsCommand,
) -> Result<()> {
    match command {
        ConnectionsCommand::Save {
            session,
            id,
            data,
            fence,
        } => {
            let reply = client
                .save_connection(pb::SaveConnectionRequest {
                    session,
                    id: id.unwrap_or_default(),
                    data: data.into_bytes().into(),
                    fence,
                })
                .await
                .map_err(failed)?;
            print_connection(reply.into_inner().connection);
        }
        ConnectionsCommand::Get { session, id } => {
            let reply = client
                .get_connection(pb::ConnectionRequest { session, id })
                .await
                .map_err(failed)?;
            print_connection(reply.into_inner().connection);
        }
        ConnectionsCommand::List { session } => {
            let reply = client
                .list_connections(pb::ListConnectionsRequest { session })
                .await
                .map_err(failed)?;
            for connection in reply.into_inner().connections {
                print_connection(Some(connection));
            }
        }
        ConnectionsCommand::Remove { session, id } => {
            client
                .remove_connection(pb::ConnectionRequest { session, id })
                .await
                .map_err(failed)?;
        }
        ConnectionsCommand::Close { session, id } => {
            let reply = client
                .close_connection(pb::ConnectionRequest { session, id })
                .await
                .map_err(failed)?;
            print_connection(reply.into_inner().connection);
        }
    }
    Ok(())
}
