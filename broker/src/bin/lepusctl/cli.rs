//! The command line: global options ([`Cli`]) and one [`Command`] per rabbitmqctl verb.

use clap::{Parser, Subcommand};

/// Administers a Lepus broker through its management API (rabbitmqctl verbs).
#[derive(Debug, Parser)]
#[command(name = "lepusctl", version, long_about = None)]
pub(crate) struct Cli {
    /// Base URL of the broker's management API.
    #[arg(
        long,
        env = "LEPUS_API",
        hide_env_values = true,
        default_value = "http://127.0.0.1:15672",
        global = true
    )]
    pub(crate) api: String,
    /// User for the management API.
    #[arg(
        long,
        short = 'u',
        env = "LEPUS_USER",
        default_value = "guest",
        global = true
    )]
    pub(crate) user: String,
    /// Password for the management API.
    #[arg(
        long,
        env = "LEPUS_PASSWORD",
        hide_env_values = true,
        default_value = "guest",
        global = true
    )]
    pub(crate) password: String,
    /// Suppress informational messages.
    #[arg(long, short = 'q', global = true)]
    pub(crate) quiet: bool,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The verbs, spelled as rabbitmqctl spells them (`add_user`, `list_queues`, ...).
#[derive(Debug, Subcommand)]
#[command(rename_all = "snake_case")]
pub(crate) enum Command {
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
        /// 127.0.0.1:5672. A wildcard address (`0.0.0.0`, `[::]`) is checked on loopback.
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
