//! `lepusctl`: administers a running Lepus broker the way `rabbitmqctl` administers RabbitMQ
//! (same verbs, same arguments, same tab-separated tables), by talking HTTP to the broker's
//! management API (`--api URL`, default `http://127.0.0.1:15672`, or `LEPUS_API`).
//!
//! Output: an informational line (`Listing queues for vhost / ...`, suppressed by `-q`), then
//! for list verbs a header row and one tab-separated row per item. Exit status: 0 on success,
//! 69 when the API cannot be reached, 70 when the broker refuses or fails the operation, 64
//! for a usage error (from clap).

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serde_json::{json, Value};

/// Administers a Lepus broker through its management API (rabbitmqctl verbs).
#[derive(Debug, Parser)]
#[command(name = "lepusctl", version, long_about = None)]
struct Cli {
    /// Base URL of the broker's management API.
    #[arg(
        long,
        env = "LEPUS_API",
        hide_env_values = true,
        default_value = "http://127.0.0.1:15672",
        global = true
    )]
    api: String,
    /// User for the management API.
    #[arg(
        long,
        short = 'u',
        env = "LEPUS_USER",
        default_value = "guest",
        global = true
    )]
    user: String,
    /// Password for the management API.
    #[arg(
        long,
        env = "LEPUS_PASSWORD",
        hide_env_values = true,
        default_value = "guest",
        global = true
    )]
    password: String,
    /// Suppress informational messages.
    #[arg(long, short = 'q', global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

/// The verbs, spelled as rabbitmqctl spells them (`add_user`, `list_queues`, ...).
#[derive(Debug, Subcommand)]
#[command(rename_all = "snake_case")]
enum Command {
    /// Creates a user (no tags, no permissions).
    AddUser {
        username: String,
        #[arg(id = "new_password", value_name = "PASSWORD")]
        password: String,
    },
    /// Deletes a user and its permissions.
    DeleteUser { username: String },
    /// Changes a user's password.
    ChangePassword {
        username: String,
        #[arg(id = "new_password", value_name = "PASSWORD")]
        password: String,
    },
    /// Replaces a user's tags.
    SetUserTags { username: String, tags: Vec<String> },
    /// Lists users and their tags.
    ListUsers,
    /// Creates a virtual host.
    AddVhost { vhost: String },
    /// Deletes a virtual host with everything in it.
    DeleteVhost { vhost: String },
    /// Lists virtual hosts.
    ListVhosts,
    /// Sets a user's permissions in a vhost: configure, write and read regexes.
    SetPermissions {
        #[arg(short = 'p', long = "vhost", default_value = "/")]
        vhost: String,
        #[arg(id = "username", value_name = "USER")]
        user: String,
        conf: String,
        write: String,
        read: String,
    },
    /// Removes a user's permissions in a vhost.
    ClearPermissions {
        #[arg(short = 'p', long = "vhost", default_value = "/")]
        vhost: String,
        #[arg(id = "username", value_name = "USER")]
        user: String,
    },
    /// Lists the permissions in a vhost.
    ListPermissions {
        #[arg(short = 'p', long = "vhost", default_value = "/")]
        vhost: String,
    },
    /// Lists queues with the given columns (default: name messages).
    ListQueues {
        #[arg(short = 'p', long = "vhost", default_value = "/")]
        vhost: String,
        columns: Vec<String>,
    },
    /// Lists exchanges (default columns: name type).
    ListExchanges {
        #[arg(short = 'p', long = "vhost", default_value = "/")]
        vhost: String,
        columns: Vec<String>,
    },
    /// Lists bindings.
    ListBindings {
        #[arg(short = 'p', long = "vhost", default_value = "/")]
        vhost: String,
    },
    /// Lists client connections (default columns: user peer_host peer_port state).
    ListConnections { columns: Vec<String> },
    /// Lists channels (default columns: pid user consumer_count messages_unacknowledged).
    ///
    /// Columns as rabbitmqctl's: pid, connection, name, number, user, vhost, transactional,
    /// confirm, consumer_count, messages_unacknowledged, messages_unconfirmed,
    /// messages_uncommitted, acks_uncommitted, prefetch_count, global_prefetch_count. `pid`
    /// and `name` print the channel's name
    /// ("CLIENT -> SERVER (N)"), `connection` its connection's name (Lepus has no Erlang
    /// pids).
    ListChannels { columns: Vec<String> },
    /// Lists consumers.
    ListConsumers {
        #[arg(short = 'p', long = "vhost", default_value = "/")]
        vhost: String,
    },
    /// Removes the ready messages of a queue.
    PurgeQueue {
        #[arg(short = 'p', long = "vhost", default_value = "/")]
        vhost: String,
        queue: String,
    },
    /// Deletes a queue.
    DeleteQueue {
        #[arg(short = 'p', long = "vhost", default_value = "/")]
        vhost: String,
        queue: String,
    },
    /// Writes the broker's definitions (users, vhosts, permissions, queues, exchanges,
    /// bindings) to FILE in RabbitMQ's JSON format; `-` writes to stdout.
    ExportDefinitions {
        #[arg(value_name = "FILE")]
        file: String,
    },
    /// Imports a definitions file in RabbitMQ's JSON format (from RabbitMQ or Lepus); `-`
    /// reads stdin. Objects are added or updated, never deleted.
    ImportDefinitions {
        #[arg(value_name = "FILE")]
        file: String,
    },
    /// Checks that the broker answers AMQP on its listener: connects and reads
    /// `connection.start` after the protocol header (rabbitmq-diagnostics'
    /// check_port_connectivity). Needs no credentials: the container image's health check.
    CheckPortConnectivity {
        /// The AMQP listener; default: LEPUS_LISTEN (the broker's own setting), else
        /// 127.0.0.1:5672. A wildcard address (0.0.0.0, [::]) is checked on loopback.
        #[arg(long, env = "LEPUS_LISTEN", default_value = "127.0.0.1:5672")]
        address: String,
        /// Seconds to wait for the answer.
        #[arg(long, default_value_t = 5)]
        timeout: u64,
    },
    /// Fails while a resource alarm is in effect (GET /api/health/checks/alarms).
    CheckAlarms,
    /// Fails while a resource alarm is in effect on this node
    /// (GET /api/health/checks/local-alarms).
    CheckLocalAlarms,
    /// Fails unless the broker listens on PORT (GET /api/health/checks/port-listener/PORT).
    CheckPortListener { port: u16 },
    /// Fails unless every virtual host is running (GET /api/health/checks/virtual-hosts).
    CheckVirtualHosts,
    /// Closes a client connection (by its name as list_connections shows it, or its id).
    CloseConnection {
        connection: String,
        #[arg(default_value = "Closed via lepusctl")]
        reason: String,
    },
}

/// Why a command failed, with its exit status.
#[derive(Debug, thiserror::Error)]
enum CtlError {
    #[error("cannot reach the management API at {api}: {cause}")]
    Unreachable { api: String, cause: String },
    #[error("{0}")]
    Refused(String),
}

impl CtlError {
    fn exit_code(&self) -> u8 {
        match self {
            Self::Unreachable { .. } => 69,
            Self::Refused(_) => 70,
        }
    }
}

/// The management API over HTTP.
struct Api {
    base: String,
    auth: String,
    agent: ureq::Agent,
}

/// `url` with the password of its userinfo (`scheme://user:password@host`) masked, for
/// messages: `LEPUS_API` may carry credentials.
fn without_password(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let authority_end = url[scheme_end..]
        .find('/')
        .map_or(url.len(), |i| scheme_end + i);
    match url[scheme_end..authority_end].rfind('@') {
        Some(at) => {
            let userinfo = &url[scheme_end..scheme_end + at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!(
                "{}{user}:***{}",
                &url[..scheme_end],
                &url[scheme_end + at..]
            )
        }
        None => url.to_owned(),
    }
}

/// Percent-encodes one path segment (everything but RFC 3986 unreserved characters).
fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Api {
    fn new(cli: &Cli) -> Self {
        use base64::Engine;
        let token = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", cli.user, cli.password));
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        Self {
            base: cli.api.trim_end_matches('/').to_owned(),
            auth: format!("Basic {token}"),
            agent,
        }
    }

    fn finish(
        &self,
        res: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<Value, CtlError> {
        let mut resp = res.map_err(|e| CtlError::Unreachable {
            api: without_password(&self.base),
            cause: e.to_string(),
        })?;
        let status = resp.status();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status.is_success() {
            Ok(body)
        } else {
            let reason = body
                .get("reason")
                .and_then(Value::as_str)
                .map_or_else(|| format!("HTTP {status}"), str::to_owned);
            Err(CtlError::Refused(reason))
        }
    }

    fn get(&self, path: &str) -> Result<Value, CtlError> {
        let res = self
            .agent
            .get(format!("{}{path}", self.base))
            .header("Authorization", &self.auth)
            .call();
        self.finish(res)
    }

    fn put(&self, path: &str, body: Value) -> Result<Value, CtlError> {
        let res = self
            .agent
            .put(format!("{}{path}", self.base))
            .header("Authorization", &self.auth)
            .send_json(body);
        self.finish(res)
    }

    fn post_raw(&self, path: &str, body: Vec<u8>) -> Result<Value, CtlError> {
        let res = self
            .agent
            .post(format!("{}{path}", self.base))
            .header("Authorization", &self.auth)
            .header("Content-Type", "application/json")
            .send(body);
        self.finish(res)
    }

    fn delete(&self, path: &str) -> Result<Value, CtlError> {
        let res = self
            .agent
            .delete(format!("{}{path}", self.base))
            .header("Authorization", &self.auth)
            .call();
        self.finish(res)
    }
}

/// Renders one JSON value as rabbitmqctl prints a cell.
fn cell(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(items)) => format!(
            "[{}]",
            items
                .iter()
                .map(|i| cell(Some(i)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Some(Value::Object(map)) if map.is_empty() => "[]".to_owned(),
        Some(other) => other.to_string(),
    }
}

/// Prints a header row and one row per item, tab separated.
fn table(items: &Value, columns: &[&str], value: impl Fn(&Value, &str) -> Option<Value>) {
    println!("{}", columns.join("\t"));
    for item in items.as_array().map(Vec::as_slice).unwrap_or_default() {
        let row: Vec<String> = columns
            .iter()
            .map(|c| cell(value(item, c).as_ref()))
            .collect();
        println!("{}", row.join("\t"));
    }
}

fn field(item: &Value, c: &str) -> Option<Value> {
    item.get(c).cloned()
}

fn columns<'a>(given: &'a [String], default: &[&'a str]) -> Vec<&'a str> {
    if given.is_empty() {
        default.to_vec()
    } else {
        given.iter().map(String::as_str).collect()
    }
}

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
