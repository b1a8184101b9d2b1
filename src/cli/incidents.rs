//! `fleetmon incidents`: what status pages tell the public, on the writer's `Alerts`
//! service. A quorum outage of a central check opens one by itself; operators open
//! others and post updates to both.

use clap::Subcommand;
use fleetmon::pb::alerts_client::AlertsClient;
use fleetmon::pb::{
    GetIncidentRequest, Incident, ListIncidentsRequest, OpenIncidentRequest, UpdateIncidentRequest,
};
use serde_json::{Value, json};

use super::table::{print_list, rfc3339};
use super::{Connection, call_error};

/// `fleetmon incidents …`.
#[derive(Debug, Subcommand)]
pub(crate) enum IncidentsCommand {
    /// Open incidents and those resolved lately, newest first.
    List {
        /// Also those resolved within this many days.
        #[arg(long, default_value_t = 14)]
        days: u32,
        #[command(flatten)]
        connection: Connection,
    },
    /// One incident with its updates.
    Show {
        /// The incident id (from `fleetmon incidents list`).
        id: u64,
        #[command(flatten)]
        connection: Connection,
    },
    /// Open an incident by hand about some central checks.
    Open {
        /// What the public reads, e.g. "Payments are slow".
        #[arg(long)]
        title: String,
        /// A check it is about (repeatable).
        #[arg(long = "check", required = true)]
        checks: Vec<String>,
        /// investigating, identified or monitoring.
        #[arg(long, default_value = "investigating")]
        status: String,
        /// The first update.
        #[arg(long)]
        message: String,
        #[command(flatten)]
        connection: Connection,
    },
    /// Post an update: a status and what to say; `resolved` ends the incident.
    Update {
        /// The incident id.
        id: u64,
        /// investigating, identified, monitoring or resolved.
        #[arg(long)]
        status: String,
        /// What the public reads.
        #[arg(long)]
        message: String,
        #[command(flatten)]
        connection: Connection,
    },
}

fn incident_json(incident: &Incident) -> Value {
    json!({
        "id": incident.id,
        "title": incident.title,
        "check_ids": incident.check_ids,
        "status": incident.status,
        "alert_id": (incident.alert_id > 0).then_some(incident.alert_id),
        "opened_at": Some(rfc3339(incident.opened_at)),
        "resolved_at": incident.resolved_at.map(|t| rfc3339(Some(t))),
        "opened_by": incident.opened_by,
        "updates": incident.updates.iter().map(|u| json!({
            "at": rfc3339(u.at),
            "status": u.status,
            "message": u.message,
            "author": u.author,
        })).collect::<Vec<_>>(),
    })
}

/// Its title, or for one an outage opened, what it is about.
fn title(incident: &Incident) -> String {
    if incident.title.is_empty() {
        format!("{} is down", incident.check_ids.join(", "))
    } else {
        incident.title.clone()
    }
}

fn print_one(incident: &Incident, json: bool) -> anyhow::Result<()> {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&incident_json(incident))?
        );
        return Ok(());
    }
    println!(
        "incident {}: {} ({})",
        incident.id,
        title(incident),
        incident.status
    );
    println!("  checks: {}", incident.check_ids.join(", "));
    if incident.alert_id > 0 {
        println!("  opened by alert {}", incident.alert_id);
    }
    for update in &incident.updates {
        println!(
            "  {}  {:<13}  {}  ({})",
            rfc3339(update.at),
            update.status,
            update.message,
            update.author
        );
    }
    Ok(())
}

/// Runs one `fleetmon incidents` command.
pub(crate) async fn run(command: IncidentsCommand) -> anyhow::Result<()> {
    let connection = match &command {
        IncidentsCommand::List { connection, .. }
        | IncidentsCommand::Show { connection, .. }
        | IncidentsCommand::Open { connection, .. }
        | IncidentsCommand::Update { connection, .. } => connection.clone(),
    };
    let mut client =
        AlertsClient::new(fleetmon::tls::connect(&connection.writer, &connection.tls()).await?);
    let failed = |call: &'static str| {
        let writer = connection.writer.clone();
        move |status| call_error(call, &writer, status)
    };
    match command {
        IncidentsCommand::List { days, .. } => {
            let incidents = client
                .list_incidents(ListIncidentsRequest {
                    resolved_within_days: days,
                })
                .await
                .map_err(failed("Alerts/ListIncidents"))?
                .into_inner()
                .incidents;
            print_list(
                connection.json,
                &incidents,
                incident_json,
                "no incidents",
                &["ID", "STATUS", "OPENED", "RESOLVED", "CHECKS", "TITLE"],
                |i| {
                    vec![
                        i.id.to_string(),
                        i.status.clone(),
                        rfc3339(i.opened_at),
                        rfc3339(i.resolved_at),
                        i.check_ids.join(","),
                        title(i),
                    ]
                },
            )?;
        }
        IncidentsCommand::Show { id, .. } => {
            let incident = client
                .get_incident(GetIncidentRequest { id })
                .await
                .map_err(failed("Alerts/GetIncident"))?
                .into_inner();
            print_one(&incident, connection.json)?;
        }
        IncidentsCommand::Open {
            title,
            checks,
            status,
            message,
            ..
        } => {
            let opened = client
                .open_incident(OpenIncidentRequest {
                    title,
                    check_ids: checks,
                    status,
                    message,
                })
                .await
                .map_err(failed("Alerts/OpenIncident"))?
                .into_inner();
            print_one(&opened, connection.json)?;
        }
        IncidentsCommand::Update {
            id,
            status,
            message,
            ..
        } => {
            let updated = client
                .update_incident(UpdateIncidentRequest {
                    id,
                    status,
                    message,
                })
                .await
                .map_err(failed("Alerts/UpdateIncident"))?
                .into_inner();
            print_one(&updated, connection.json)?;
        }
    }
    Ok(())
}
