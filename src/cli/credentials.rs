//! `fleetmon tokens …` and `fleetmon certs revoke`: the collector's `Credentials`
//! service (enrollment tokens, revocations).

use std::time::Duration;

use clap::Subcommand;
use fleetmon::pb::credentials_client::CredentialsClient;
use fleetmon::pb::fleet_client::FleetClient;
use fleetmon::pb::{
    AgentCredential, CreateTokenRequest, EnrollmentToken, GetAgentRequest,
    ListAgentCredentialsRequest, ListTokensRequest, RevokeAgentRequest, RevokeTokenRequest,
};
use serde_json::{Value, json};
use tonic::transport::Channel;

use super::checks::parse_label;
use super::table::labels as labels_text;
use super::table::{render, rfc3339};
use super::{Connection, call_error, parse_duration};

/// `fleetmon tokens …`.
#[derive(Debug, Subcommand)]
pub(crate) enum TokensCommand {
    /// Create an enrollment token; it is printed once (only its hash is stored).
    Create {
        #[command(flatten)]
        connection: Connection,
        /// How long it may be used (90s, 15m, 1h, 7d).
        #[arg(long, default_value = "24h", value_parser = parse_duration)]
        expires: Duration,
        /// How many agents may enroll with it (0: any number until it expires).
        #[arg(long, default_value_t = 1)]
        uses: u32,
        /// Labels the enrolled agents get: location=eu-west,role=edge.
        #[arg(long, value_delimiter = ',', value_parser = parse_label)]
        labels: Vec<(String, String)>,
        /// What it is for, for whoever reads the list.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Every token: uses, expiry, labels, revoked.
    List {
        #[command(flatten)]
        connection: Connection,
    },
    /// Revoke a token: no agent enrolls with it any more.
    Revoke {
        /// The token id (the part before the dot).
        id: String,
        #[command(flatten)]
        connection: Connection,
    },
}

pub(crate) async fn client(conn: &Connection) -> anyhow::Result<CredentialsClient<Channel>> {
    Ok(CredentialsClient::new(
        fleetmon::tls::connect(&conn.collector, &conn.tls()).await?,
    ))
}

fn token_json(token: &EnrollmentToken) -> Value {
    json!({
        "id": token.id,
        "created_at": rfc3339(token.created_at),
        "expires_at": rfc3339(token.expires_at),
        "max_uses": token.max_uses,
        "uses": token.uses,
        "labels": token.labels.iter().collect::<std::collections::BTreeMap<_, _>>(),
        "revoked": token.revoked,
        "created_by": token.created_by,
        "description": token.description,
    })
}

/// Runs a `tokens` command.
pub(crate) async fn tokens(command: TokensCommand) -> anyhow::Result<()> {
    match command {
        TokensCommand::Create {
            connection,
            expires,
            uses,
            labels,
            description,
        } => {
            let created = client(&connection)
                .await?
                .create_token(CreateTokenRequest {
                    expires_in_seconds: expires.as_secs().max(1),
                    max_uses: uses,
                    labels: labels.into_iter().collect(),
                    description,
                })
                .await
                .map_err(|s| call_error("Credentials/CreateToken", &connection.collector, s))?
                .into_inner();
            if connection.json {
                let mut value = created.info.as_ref().map(token_json).unwrap_or_default();
                value["token"] = json!(created.token);
                println!("{value}");
            } else {
                println!("{}", created.token);
                if let Some(info) = &created.info {
                    eprintln!(
                        "token {} expires {}, {} use(s){}; it is shown only now",
                        info.id,
                        rfc3339(info.expires_at),
                        if info.max_uses == 0 {
                            "any number of".to_owned()
                        } else {
                            info.max_uses.to_string()
                        },
                        if info.labels.is_empty() {
                            String::new()
                        } else {
                            format!(", labels {}", labels_text(&info.labels))
                        }
                    );
                }
            }
        }
        TokensCommand::List { connection } => {
            let tokens = client(&connection)
                .await?
                .list_tokens(ListTokensRequest {})
                .await
                .map_err(|s| call_error("Credentials/ListTokens", &connection.collector, s))?
                .into_inner()
                .tokens;
            if connection.json {
                println!("{}", Value::Array(tokens.iter().map(token_json).collect()));
                return Ok(());
            }
            let rows: Vec<Vec<String>> = tokens
                .iter()
                .map(|t| {
                    vec![
                        t.id.clone(),
                        if t.max_uses == 0 {
                            format!("{}/-", t.uses)
                        } else {
                            format!("{}/{}", t.uses, t.max_uses)
                        },
                        rfc3339(t.expires_at),
                        labels_text(&t.labels),
                        if t.revoked { "yes" } else { "no" }.to_owned(),
                        t.created_by.clone(),
                        t.description.clone(),
                    ]
                })
                .collect();
            print!(
                "{}",
                render(
                    &[
                        "TOKEN",
                        "USES",
                        "EXPIRES",
                        "LABELS",
                        "REVOKED",
                        "BY",
                        "DESCRIPTION"
                    ],
                    &rows
                )
            );
        }
        TokensCommand::Revoke { id, connection } => {
            let token = client(&connection)
                .await?
                .revoke_token(RevokeTokenRequest { id })
                .await
                .map_err(|s| call_error("Credentials/RevokeToken", &connection.collector, s))?
                .into_inner();
            println!("token {} revoked", token.id);
        }
    }
    Ok(())
}

/// `fleetmon certs revoke NAME` or `--serial HEX`: every collector closes the agent's
/// streams and refuses its certificates.
pub(crate) async fn revoke(
    conn: &Connection,
    name: Option<String>,
    serial: Option<String>,
) -> anyhow::Result<()> {
    let channel = fleetmon::tls::connect(&conn.collector, &conn.tls()).await?;
    let agent = CredentialsClient::new(channel.clone())
        .revoke_agent(RevokeAgentRequest {
            name: name.unwrap_or_default(),
            serial: serial.unwrap_or_default(),
        })
        .await
        .map_err(|s| call_error("Credentials/RevokeAgent", &conn.collector, s))?
        .into_inner();
    if conn.json {
        println!("{}", credential_json(&agent));
    } else if agent.name.is_empty() {
        println!(
            "certificate {} revoked on every collector: connections presenting it close as each collector reads the revocation",
            agent.serial
        );
    } else {
        println!("agent {} revoked on every collector", agent.name);
        println!(
            "{}",
            closed_here(FleetClient::new(channel), &agent.name, &conn.collector).await
        );
    }
    Ok(())
}

/// `fleetmon certs register --cert-file FILE`: the collector records the hand-issued
/// agent certificate's name as taken by its key.
pub(crate) async fn register(conn: &Connection, file: &std::path::Path) -> anyhow::Result<()> {
    let pem = std::fs::read_to_string(file)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
    let agent = client(conn)
        .await?
        .register_agent(fleetmon::pb::RegisterAgentRequest {
            certificate_pem: pem,
        })
        .await
        .map_err(|s| call_error("Credentials/RegisterAgent", &conn.collector, s))?
        .into_inner();
    if conn.json {
        println!("{}", credential_json(&agent));
    } else {
        println!(
            "agent {} registered: no enrollment takes its name while its certificate is valid (until {})",
            agent.name,
            rfc3339(agent.not_after)
        );
    }
    Ok(())
}

/// What became of agent `name`'s connection to the collector at `collector` after its
/// revocation: waits (15 s at most) until the collector reports it disconnected.
async fn closed_here(mut fleet: FleetClient<Channel>, name: &str, collector: &str) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let request = GetAgentRequest {
            agent_id: name.to_owned(),
        };
        match fleet.get_agent(request).await {
            Err(status) if status.code() == tonic::Code::NotFound => {
                return format!("{collector}: {name} was not connected");
            }
            Err(status) => {
                return format!(
                    "{collector}: cannot tell whether {name} is still connected: {}",
                    status.message()
                );
            }
            Ok(info) if !info.get_ref().connected => {
                let from = &info.get_ref().remote_address;
                return format!("{collector}: closed the connection of {name} from {from}");
            }
            Ok(_) if tokio::time::Instant::now() >= deadline => {
                return format!("{collector}: {name} is still connected after 15 s");
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

pub(crate) fn credential_json(agent: &AgentCredential) -> Value {
    json!({
        "name": agent.name,
        "serial": agent.serial,
        "not_after": rfc3339(agent.not_after),
        "revoked": agent.revoked,
        "revoked_at": agent.revoked_at.map(|t| rfc3339(Some(t))),
        "revoked_by": agent.revoked_by,
        "token_id": agent.token_id,
    })
}

/// The agent credentials the collector holds (empty when it cannot say).
pub(crate) async fn credentials(conn: &Connection) -> Vec<AgentCredential> {
    let Ok(mut client) = client(conn).await else {
        return Vec::new();
    };
    client
        .list_agent_credentials(ListAgentCredentialsRequest {})
        .await
        .map(|r| r.into_inner().agents)
        .unwrap_or_default()
}
