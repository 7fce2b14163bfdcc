//! `lepusctl`: administers a running Lepus broker the way `rabbitmqctl` administers RabbitMQ
//! (same verbs, same arguments, same tab-separated tables), by talking HTTP to the broker's
//! management API (`--api URL`, default `http://127.0.0.1:15672`, or `LEPUS_API`).
//!
//! Output: an informational line (`Listing queues for vhost / ...`, suppressed by `-q`), then
//! for list verbs a header row and one tab-separated row per item. Exit status: 0 on success,
//! 69 when the API cannot be reached, 70 when the broker refuses or fails the operation, 76
//! when its answer cannot be read whole or is not JSON, 64 for a usage error (from clap).

use std::process::ExitCode;

use clap::Parser;
// The broker's own encoder of the management API's path segments.
use lepus_broker::percent_encode as seg;
use serde_json::{json, Value};

mod api;
mod cli;
mod table;

use api::{Api, CtlError};
use cli::{Cli, Command};
use table::{cell, columns, field, table};

fn run(cli: &Cli) -> Result<(), CtlError> {
    let api = Api::new(cli);
    let info = |line: String| {
        if !cli.quiet {
            println!("{line}");
        }
    };
    match &cli.command {
        Command::AddUser { username, password } => {
            info(format!("Adding user \"{username}\" ..."));
            if api.get(&format!("/api/users/{}", seg(username))).is_ok() {
                return Err(CtlError::Refused(format!(
                    "user '{username}' already exists"
                )));
            }
            api.put(
                &format!("/api/users/{}", seg(username)),
                json!({ "password": password, "tags": "" }),
            )?;
        }
        Command::DeleteUser { username } => {
            info(format!("Deleting user \"{username}\" ..."));
            api.delete(&format!("/api/users/{}", seg(username)))?;
        }
        Command::ChangePassword { username, password } => {
            info(format!("Changing password for user \"{username}\" ..."));
            api.get(&format!("/api/users/{}", seg(username)))?;
            api.put(
                &format!("/api/users/{}", seg(username)),
                json!({ "password": password }),
            )?;
        }
        Command::SetUserTags { username, tags } => {
            info(format!(
                "Setting tags for user \"{username}\" to [{}] ...",
                tags.join(", ")
            ));
            api.get(&format!("/api/users/{}", seg(username)))?;
            api.put(
                &format!("/api/users/{}", seg(username)),
                json!({ "tags": tags }),
            )?;
        }
        Command::ListUsers => {
            info("Listing users ...".to_owned());
            table(&api.get("/api/users")?, &["user", "tags"], |u, c| {
                field(u, if c == "user" { "name" } else { c })
            });
        }
        Command::AddVhost { vhost } => {
            info(format!("Adding vhost \"{vhost}\" ..."));
            if api.get(&format!("/api/vhosts/{}", seg(vhost))).is_ok() {
                return Err(CtlError::Refused(format!(
                    "virtual host '{vhost}' already exists"
                )));
            }
            api.put(&format!("/api/vhosts/{}", seg(vhost)), json!({}))?;
        }
        Command::DeleteVhost { vhost } => {
            info(format!("Deleting vhost \"{vhost}\" ..."));
            api.delete(&format!("/api/vhosts/{}", seg(vhost)))?;
        }
        Command::ListVhosts => {
            info("Listing vhosts ...".to_owned());
            table(&api.get("/api/vhosts")?, &["name"], field);
        }
        Command::SetPermissions {
            vhost,
            user,
            conf,
            write,
            read,
        } => {
            info(format!(
                "Setting permissions for user \"{user}\" in vhost \"{vhost}\" ..."
            ));
            api.put(
                &format!("/api/permissions/{}/{}", seg(vhost), seg(user)),
                json!({ "configure": conf, "write": write, "read": read }),
            )?;
        }
        Command::ClearPermissions { vhost, user } => {
            info(format!(
                "Clearing permissions for user \"{user}\" in vhost \"{vhost}\" ..."
            ));
            api.delete(&format!("/api/permissions/{}/{}", seg(vhost), seg(user)))?;
        }
        Command::ListPermissions { vhost } => {
            info(format!("Listing permissions for vhost \"{vhost}\" ..."));
            table(
                &api.get(&format!("/api/vhosts/{}/permissions", seg(vhost)))?,
                &["user", "configure", "write", "read"],
                field,
            );
        }
        Command::ListQueues { vhost, columns: c } => {
            info(format!("Listing queues for vhost {vhost} ..."));
            table(
                &api.get(&format!("/api/queues/{}", seg(vhost)))?,
                &columns(c, &["name", "messages"]),
                field,
            );
        }
        Command::ListExchanges { vhost, columns: c } => {
            info(format!("Listing exchanges for vhost {vhost} ..."));
            table(
                &api.get(&format!("/api/exchanges/{}", seg(vhost)))?,
                &columns(c, &["name", "type"]),
                field,
            );
        }
        Command::ListBindings { vhost } => {
            info(format!("Listing bindings for vhost {vhost}..."));
            table(
                &api.get(&format!("/api/bindings/{}", seg(vhost)))?,
                &[
                    "source_name",
                    "source_kind",
                    "destination_name",
                    "destination_kind",
                    "routing_key",
                    "arguments",
                ],
                |b, c| match c {
                    "source_name" => field(b, "source"),
                    "source_kind" => Some(json!("exchange")),
                    "destination_name" => field(b, "destination"),
                    "destination_kind" => field(b, "destination_type"),
                    other => field(b, other),
                },
            );
        }
        Command::ListConnections { columns: c } => {
            info("Listing connections ...".to_owned());
            table(
                &api.get("/api/connections")?,
                &columns(c, &["user", "peer_host", "peer_port", "state"]),
                field,
            );
        }
        Command::ListChannels { columns: c } => {
            info("Listing channels ...".to_owned());
            table(
                &api.get("/api/channels")?,
                &columns(
                    c,
                    &["pid", "user", "consumer_count", "messages_unacknowledged"],
                ),
                |ch, col| match col {
                    "pid" => field(ch, "name"),
                    "connection" => ch.pointer("/connection_details/name").cloned(),
                    other => field(ch, other),
                },
            );
        }
        Command::ListConsumers { vhost } => {
            info(format!("Listing consumers in vhost {vhost} ..."));
            let all = api.get("/api/consumers")?;
            let mine: Vec<Value> = all
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .filter(|c| c.pointer("/queue/vhost").and_then(Value::as_str) == Some(vhost))
                .cloned()
                .collect();
            table(
                &Value::Array(mine),
                &[
                    "queue_name",
                    "channel_pid",
                    "consumer_tag",
                    "ack_required",
                    "prefetch_count",
                    "active",
                    "arguments",
                ],
                |c, col| match col {
                    "queue_name" => c.pointer("/queue/name").cloned(),
                    "channel_pid" => Some(json!(format!(
                        "{} ({})",
                        cell(c.pointer("/channel_details/connection_name")),
                        cell(c.pointer("/channel_details/number"))
                    ))),
                    "arguments" => Some(json!([])),
                    other => field(c, other),
                },
            );
        }
        Command::PurgeQueue { vhost, queue } => {
            info(format!("Purging queue '{queue}' in vhost '{vhost}' ..."));
            api.delete(&format!(
                "/api/queues/{}/{}/contents",
                seg(vhost),
                seg(queue)
            ))?;
        }
        Command::DeleteQueue { vhost, queue } => {
            info(format!("Deleting queue '{queue}' on vhost '{vhost}' ..."));
            api.delete(&format!("/api/queues/{}/{}", seg(vhost), seg(queue)))?;
        }
        Command::ExportDefinitions { file } => {
            info(format!("Exporting definitions to {file} ..."));
            let defs = api.get("/api/definitions")?;
            let text = serde_json::to_string_pretty(&defs)
                .map_err(|e| CtlError::Refused(e.to_string()))?;
            if file == "-" {
                println!("{text}");
            } else {
                std::fs::write(file, text + "\n")
                    .map_err(|e| CtlError::Refused(format!("cannot write {file}: {e}")))?;
            }
        }
        Command::ImportDefinitions { file } => {
            info(format!("Importing definitions from {file} ..."));
            let bytes = if file == "-" {
                let mut buf = Vec::new();
                std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)
                    .map_err(|e| CtlError::Refused(format!("cannot read stdin: {e}")))?;
                buf
            } else {
                std::fs::read(file)
                    .map_err(|e| CtlError::Refused(format!("cannot read {file}: {e}")))?
            };
            let answer = api.post_raw("/api/definitions", bytes)?;
            if let Some(skipped) = answer.get("skipped") {
                eprintln!("Skipped (Lepus has none of these): {skipped}");
            }
        }
        Command::CheckPortConnectivity { address, timeout } => {
            info(format!("Checking AMQP connectivity of {address} ..."));
            check_amqp(address, std::time::Duration::from_secs(*timeout))?;
            info("The broker answers AMQP 0-9-1.".to_owned());
        }
        Command::CheckAlarms => health(&api, &info, "/api/health/checks/alarms")?,
        Command::CheckLocalAlarms => health(&api, &info, "/api/health/checks/local-alarms")?,
        Command::CheckPortListener { port } => health(
            &api,
            &info,
            &format!("/api/health/checks/port-listener/{port}"),
        )?,
        Command::CheckVirtualHosts => health(&api, &info, "/api/health/checks/virtual-hosts")?,
        Command::CloseConnection { connection, reason } => {
            info(format!(
                "Closing connection {connection}, reason: {reason}..."
            ));
            api.delete(&format!("/api/connections/{}", seg(connection)))?;
        }
    }
    Ok(())
}

/// Runs one of RabbitMQ's health checks; a failed check is an error with the broker's reason.
fn health(api: &Api, info: &dyn Fn(String), path: &str) -> Result<(), CtlError> {
    info(format!("Running {path} ..."));
    let answer = api.get(path)?;
    info(format!("Health check passed: {answer}"));
    Ok(())
}

/// Connects to `address`, sends the AMQP 0-9-1 protocol header and checks that the answer is
/// a `connection.start` method frame (frame type 1, channel 0, class 10, method 10; spec
/// 4.2.3 and 1.4.2.1), then hangs up.
fn check_amqp(address: &str, timeout: std::time::Duration) -> Result<(), CtlError> {
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
    let unreachable = |cause: String| CtlError::Unreachable {
        api: address.to_owned(),
        cause,
    };
    let mut addrs: Vec<SocketAddr> = address
        .to_socket_addrs()
        .map_err(|e| unreachable(e.to_string()))?
        .collect();
    for a in &mut addrs {
        if a.ip().is_unspecified() {
            a.set_ip(if a.is_ipv4() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            });
        }
    }
    let addr = addrs
        .first()
        .ok_or_else(|| unreachable("no address".to_owned()))?;
    let mut stream =
        TcpStream::connect_timeout(addr, timeout).map_err(|e| unreachable(e.to_string()))?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| unreachable(e.to_string()))?;
    stream
        .write_all(b"AMQP\x00\x00\x09\x01")
        .map_err(|e| unreachable(e.to_string()))?;
    // Frame header (type, channel, size) and the method's class and method ids.
    let mut head = [0u8; 11];
    stream
        .read_exact(&mut head)
        .map_err(|e| unreachable(format!("no AMQP answer: {e}")))?;
    if head[0] == 1 && head[1..3] == [0, 0] && head[7..11] == [0, 10, 0, 10] {
        Ok(())
    } else {
        Err(CtlError::Refused(format!(
            "{address} answered, but not with connection.start: {head:02x?}"
        )))
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("Error:\n{err}");
            ExitCode::from(err.exit_code())
        }
    }
}
