//! Access control of the bundled broker through real clients: logins (wrong password, the
//! loopback-only `guest`), per-vhost permissions applied per method (publish needs write on the
//! exchange, consume and get need read on the queue), vhost isolation, revocation taking
//! effect on open connections, and users/permissions surviving a restart from the data dir.
//!
//! Every broker here is started by the test on 127.0.0.1 port 0 (these tests configure users,
//! so they never run against the shared external broker).

mod amqp;
mod common;
mod raw;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use amq_protocol::frame::AMQPFrame;
use amq_protocol::protocol::{connection, AMQPClass};
use amqp::*;
use lapin::options::{BasicConsumeOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties, ExchangeKind};
use lepus::broker::{Broker, BrokerBuilder, BrokerHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

async fn start(builder: BrokerBuilder) -> BrokerHandle {
    builder
        .listen("127.0.0.1:0")
        .start()
        .await
        .expect("broker starts")
}

/// `amqp://USER:PASS@ADDR/VHOST` (vhost percent-encoded as lapin wants it).
fn url(b: &BrokerHandle, user: &str, pass: &str, vhost: &str) -> String {
    format!(
        "amqp://{user}:{pass}@{}/{}",
        b.local_addr(),
        vhost.replace('%', "%25").replace('/', "%2f")
    )
}

/// Adds `user` (password `pass`) with the permissions `[configure, write, read]` on `vhost`.
fn add_user(b: &BrokerHandle, (user, pass): (&str, &str), vhost: &str, perms: [&str; 3]) {
    let admin = b.admin();
    admin.add_user(user, pass).expect("add user");
    let [configure, write, read] = perms;
    admin
        .set_permissions(vhost, user, configure, write, read)
        .expect("set permissions");
}

/// `user` logged into `vhost` of `b`; fails the test if the login is refused.
async fn login(b: &BrokerHandle, user: &str, pass: &str, vhost: &str) -> Connection {
    try_connect_url(&url(b, user, pass, vhost))
        .await
        .unwrap_or_else(|err| panic!("{user} logs into {vhost}: {err}"))
}

/// A broker with the user `user` (password `pw`) allowed `perms` on `/`, logged in there.
async fn logged_in(user: &str, perms: [&str; 3]) -> (BrokerHandle, Connection) {
    let broker = start(Broker::builder()).await;
    add_user(&broker, (user, "pw"), "/", perms);
    let conn = login(&broker, user, "pw", "/").await;
    (broker, conn)
}

/// Closes `conn` (checked), then shuts `broker` down.
async fn close(conn: Connection, broker: BrokerHandle) {
    conn.close(200, "bye".into()).await.expect("close");
    broker.shutdown().await;
}

/// Asserts that `user` cannot log into `vhost` of `b` (`why`), refused with `code`.
async fn assert_refused(
    b: &BrokerHandle,
    (user, pass): (&str, &str),
    vhost: &str,
    code: u16,
    why: &str,
) {
    let err = try_connect_url(&url(b, user, pass, vhost))
        .await
        .expect_err(why);
    assert_eq!(reply_code(&err), Some(code), "got {err}");
}

/// Connects lapin to `url` from a socket bound to `from` (port 0), so that the broker sees
/// `from` as the peer address. Uses lapin's transport hook (`Connection::connector`), the
/// same path `Connection::connect` takes, with our socket instead of its own.
async fn connect_from(url: &str, from: IpAddr) -> lapin::Result<Connection> {
    let uri: lapin::uri::AMQPUri = url.parse().expect("an AMQP URL");
    let server: SocketAddr = format!("{}:{}", uri.authority.host, uri.authority.port)
        .parse()
        .expect("the broker URL names an IP address");
    let runtime = lapin::runtime::default_runtime()?;
    let dial = async move |_: lapin::uri::AMQPUri, _| {
        let socket = TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(from, 0))?;
        let stream = socket.connect(server).await?;
        Ok(lapin::tcp::AsyncTcpStream::Plain(
            async_compat::Compat::new(stream),
        ))
    };
    within(
        "the connection attempt",
        Connection::connector(uri, runtime, dial, ConnectionProperties::default()),
    )
    .await
}

/// The `peer_host` of each open connection, as the broker's management API reports them
/// (`GET /api/connections`, one HTTP/1.0 request by hand; the compact JSON is scanned for the
/// field rather than parsed, to keep this suite free of a JSON dependency).
async fn broker_side_peers(b: &BrokerHandle) -> Vec<String> {
    let mut s = tokio::net::TcpStream::connect(b.management_addr().expect("management on"))
        .await
        .expect("connect to the management API");
    // base64("guest:guest")
    s.write_all(b"GET /api/connections HTTP/1.0\r\nAuthorization: Basic Z3Vlc3Q6Z3Vlc3Q=\r\n\r\n")
        .await
        .expect("request");
    let mut response = String::new();
    within("the API response", s.read_to_string(&mut response))
        .await
        .expect("response");
    let status = response.lines().next().unwrap_or_default();
    assert!(status.contains(" 200 "), "{response}");
    response
        .split("\"peer_host\":\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn wrong_password_is_refused_403_and_never_gets_a_channel() {
    let broker = start(Broker::builder()).await;
    add_user(&broker, ("alice", "right-pw"), "/", [".*", ".*", ".*"]);
    let why = "login must fail";
    assert_refused(&broker, ("alice", "wrong-pw"), "/", 403, why).await;
    // Unknown users get the same answer (no user enumeration).
    assert_refused(&broker, ("mallory", "right-pw"), "/", 403, why).await;

    // On the wire: after a refused start-ok the next (and last) frame is connection.close 403,
    // never connection.tune, so no channel can ever be opened.
    let mut raw = RawLogin::connect(broker.local_addr(), None).await;
    let reply = raw.login("alice", "wrong-pw").await;
    assert_eq!(reply, LoginReply::Close(403), "refused login");
    assert!(raw.at_eof().await, "socket closed after the refusal");

    // The right password works.
    let conn = login(&broker, "alice", "right-pw", "/").await;
    let ch = channel(&conn).await;
    declare_server_named(&ch).await;
    close(conn, broker).await;
}

#[tokio::test]
async fn without_write_permission_publishing_is_403_and_without_read_consuming_is_403() {
    // May configure anything, write only to exchanges/queues starting "open.", read only
    // queues starting "open.".
    let (broker, conn) = logged_in("pub", [".*", "^open\\.", "^open\\."]).await;
    let ch = channel(&conn).await;
    for ex in ["open.x", "closed.x"] {
        declare_exchange(&ch, ex, ExchangeKind::Fanout).await;
    }
    let q = "open.q";
    declare_queue(&ch, q, FieldTable::default()).await;
    declare_queue(&ch, "closed.q", FieldTable::default()).await;
    // Binding needs write on the queue and read on the exchange: open.q <- open.x only.
    bind(&ch, q, "open.x", "").await;

    // Allowed: write on open.x.
    let pch = confirm_channel(&conn).await;
    publish_confirmed(&pch, "open.x", "", b"hello", BasicProperties::default()).await;
    assert_eq!(get_body(&ch, q).await.as_deref(), Some(&b"hello"[..]));

    // Refused: write on closed.x, and on the default exchange (checked as amq.default).
    let text = assert_code(
        publish_error(&conn, "closed.x", "", BasicProperties::default()).await,
        403,
    );
    assert!(
        text.contains("write access to exchange 'closed.x' in vhost '/' refused for user 'pub'"),
        "{text}"
    );
    assert_code(
        publish_error(&conn, "", q, BasicProperties::default()).await,
        403,
    );

    // Reading closed.q is refused, for consume and get alike.
    let consume = BasicConsumeOptions::default;
    let res = try_consume_tagged(&channel(&conn).await, "closed.q", "c", consume()).await;
    let text = assert_code(res, 403);
    assert!(text.contains("read access to queue 'closed.q'"), "{text}");
    assert_code(try_get(&channel(&conn).await, "closed.q").await, 403);
    // And binding closed.q (write on the queue) is refused too.
    let ch4 = channel(&conn).await;
    let res = try_bind(&ch4, "closed.q", "open.x", "", FieldTable::default()).await;
    assert_code(res, 403);
    // The connection survives channel-level refusals.
    let ok = channel(&conn).await;
    let _consumer = try_consume_tagged(&ok, q, "reader", consume())
        .await
        .expect("read on open.q is allowed");
    close(conn, broker).await;
}

#[tokio::test]
async fn configure_permission_guards_declare_and_delete() {
    let (broker, conn) = logged_in("app", ["^app\\.", ".*", ".*"]).await;
    let ch = channel(&conn).await;
    declare_queue(&ch, "app.q", FieldTable::default()).await;
    let declare = |ch, name, options| try_declare_queue(ch, name, options, FieldTable::default());
    let ch2 = channel(&conn).await;
    let text = assert_code(
        declare(&ch2, "other.q", QueueDeclareOptions::default()).await,
        403,
    );
    assert!(
        text.contains("configure access to queue 'other.q'"),
        "{text}"
    );
    // A server-named queue is checked under its generated name (amq.gen-...), which
    // ^app\. does not match.
    let ch3 = channel(&conn).await;
    assert_code(
        declare(&ch3, "", QueueDeclareOptions::exclusive()).await,
        403,
    );
    close(conn, broker).await;
}

#[tokio::test]
async fn revoked_permissions_apply_to_open_connections() {
    let (broker, conn) = logged_in("rev", [".*", ".*", ".*"]).await;
    let admin = broker.admin();
    let ch = confirm_channel(&conn).await;
    declare_exchange(&ch, "rev.x", ExchangeKind::Fanout).await;
    publish_confirmed(&ch, "rev.x", "", b"1", BasicProperties::default()).await;
    // The grant is cached now; revoking write must still take effect.
    admin
        .set_permissions("/", "rev", ".*", "^$", ".*")
        .expect("revoke write");
    assert_code(
        publish_error(&conn, "rev.x", "", BasicProperties::default()).await,
        403,
    );
    close(conn, broker).await;
}

#[tokio::test]
async fn guest_from_a_non_loopback_address_is_refused() {
    // RabbitMQ counts all of 127.0.0.0/8 as loopback (rabbit_net:is_loopback), and so do we by
    // default; on one host a "remote" client therefore needs a policy saying that only
    // 127.0.0.1 is local. The client socket really is bound to 127.0.0.2: the broker judges
    // the peer address the kernel reports for the accepted socket.
    let strict = start(
        Broker::builder()
            .loopback_addresses([IpAddr::V4(Ipv4Addr::LOCALHOST)])
            .management_listen("127.0.0.1:0"),
    )
    .await;
    let remote = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

    // lapin from 127.0.0.2: refused with 403 ACCESS_REFUSED, so no channel can ever open.
    let err = connect_from(&url(&strict, "guest", "guest", "/"), remote)
        .await
        .expect_err("guest from 127.0.0.2 is refused");
    assert_eq!(reply_code(&err), Some(403), "{err}");
    assert!(err.to_string().contains("ACCESS_REFUSED"), "{err}");

    // The same on the wire: connection.close 403 instead of tune, and a channel.open sent
    // anyway gets no open-ok: the broker has hung up.
    let mut raw = RawLogin::connect(strict.local_addr(), Some(remote)).await;
    assert_eq!(
        raw.peer_ip(),
        Some(remote),
        "the client is bound to 127.0.0.2"
    );
    assert_eq!(raw.login("guest", "guest").await, LoginReply::Close(403));
    assert!(
        raw.close_text
            .starts_with("ACCESS_REFUSED - Login was refused"),
        "{}",
        raw.close_text
    );
    assert_eq!(raw.open_channel_after_refusal().await, None);

    // From 127.0.0.1 guest is welcome.
    let mut raw = RawLogin::connect(strict.local_addr(), None).await;
    assert_eq!(raw.login("guest", "guest").await, LoginReply::Tune);

    // A user outside loopback_users may log in from 127.0.0.2 and use channels; the broker
    // reports that connection's peer as 127.0.0.2, the address it judged.
    add_user(&strict, ("remote", "pw"), "/", [".*", ".*", ".*"]);
    let conn = connect_from(&url(&strict, "remote", "pw", "/"), remote)
        .await
        .expect("remote logs in from 127.0.0.2");
    let ch = channel(&conn).await;
    declare_server_named(&ch).await;
    assert_eq!(broker_side_peers(&strict).await, ["127.0.0.2"]);
    conn.close(200, "bye".into()).await.expect("close");
    strict.shutdown().await;

    // Emptying loopback_users lets guest in from 127.0.0.2 under the same policy.
    let open = start(
        Broker::builder()
            .loopback_addresses([IpAddr::V4(Ipv4Addr::LOCALHOST)])
            .loopback_users(Vec::<String>::new()),
    )
    .await;
    let conn = connect_from(&url(&open, "guest", "guest", "/"), remote)
        .await
        .expect("guest is not loopback-only here");
    conn.close(200, "bye".into()).await.expect("close");
    open.shutdown().await;

    // With RabbitMQ's own rule 127.0.0.2 is loopback, so guest gets in.
    let standard = start(Broker::builder()).await;
    let conn = connect_from(&url(&standard, "guest", "guest", "/"), remote)
        .await
        .expect("127.0.0.2 is loopback by RabbitMQ's rule");
    conn.close(200, "bye".into()).await.expect("close");
    standard.shutdown().await;
}

#[tokio::test]
async fn vhosts_are_isolated_and_need_a_permission_to_open() {
    let broker = start(Broker::builder()).await;
    let admin = broker.admin();
    admin.add_vhost("iso-a").expect("add vhost");
    admin.add_vhost("iso-b").expect("add vhost");
    add_user(&broker, ("u", "pw"), "iso-a", [".*", ".*", ".*"]);
    admin
        .set_permissions("iso-b", "u", ".*", ".*", ".*")
        .expect("perms");
    let a = login(&broker, "u", "pw", "iso-a").await;
    let b = login(&broker, "u", "pw", "iso-b").await;
    let cha = channel(&a).await;
    declare_queue(&cha, "shared-name", FieldTable::default()).await;
    let pch = confirm_channel(&a).await;
    publish_confirmed(&pch, "", "shared-name", b"in-a", BasicProperties::default()).await;
    // Invisible from iso-b: a passive declare there is 404.
    let chb = channel(&b).await;
    assert_code(passive_queue(&chb, "shared-name").await, 404);
    // The same name in iso-b is a different, empty queue.
    let chb = channel(&b).await;
    let qb = declare_queue(&chb, "shared-name", FieldTable::default()).await;
    assert_eq!(qb.message_count(), 0);
    let qa = passive_queue(&cha, "shared-name")
        .await
        .expect("still in a");
    assert_eq!(qa.message_count(), 1);
    // The default vhost does not see it either.
    let guest = login(&broker, "guest", "guest", "/").await;
    let chg = channel(&guest).await;
    assert_code(passive_queue(&chg, "shared-name").await, 404);
    // No permission in a vhost: 530 on connection.open; so is an unknown vhost.
    let why = "guest has no permissions in iso-a";
    assert_refused(&broker, ("guest", "guest"), "iso-a", 530, why).await;
    assert_refused(&broker, ("u", "pw"), "no-such", 530, "unknown vhost").await;
    // A deleted vhost is gone for new connections.
    admin.delete_vhost("iso-b").expect("delete vhost");
    assert_refused(&broker, ("u", "pw"), "iso-b", 530, "deleted vhost").await;
    broker.shutdown().await;
}

#[tokio::test]
async fn users_vhosts_and_permissions_survive_a_restart() {
    let data = common::DataDir::new("access-restart");
    let dir = data.path();
    {
        let broker = start(Broker::builder().data_dir(dir)).await;
        let admin = broker.admin();
        admin.add_user("keeper", "kept-pw").expect("add user");
        admin
            .set_user_tags("keeper", &["monitoring".to_owned()])
            .expect("tags");
        admin.add_vhost("kept").expect("add vhost");
        admin
            .set_permissions("kept", "keeper", ".*", "^w$", ".*")
            .expect("perms");
        admin.add_user("gone", "pw").expect("add user");
        admin.delete_user("gone").expect("delete user");
        broker.shutdown().await;
    }
    let on_disk = std::fs::read_to_string(dir.join("access.json")).expect("access.json");
    assert!(
        !on_disk.contains("kept-pw"),
        "no plaintext password on disk"
    );

    let broker = start(Broker::builder().data_dir(dir)).await;
    let admin = broker.admin();
    assert_eq!(
        admin.user("keeper").map(|u| u.tags),
        Some(vec!["monitoring".to_owned()])
    );
    assert!(admin.user("gone").is_none());
    assert!(admin.list_vhosts().contains(&"kept".to_owned()));
    let conn = login(&broker, "keeper", "kept-pw", "kept").await;
    let ch = channel(&conn).await;
    declare_exchange(&ch, "w", ExchangeKind::Fanout).await;
    declare_exchange(&ch, "not-w", ExchangeKind::Fanout).await;
    let pch = confirm_channel(&conn).await;
    publish_confirmed(&pch, "w", "", b"ok", BasicProperties::default()).await;
    assert_code(
        publish_error(&conn, "not-w", "", BasicProperties::default()).await,
        403,
    );
    let why = "wrong password after restart";
    assert_refused(&broker, ("keeper", "wrong"), "kept", 403, why).await;
    close(conn, broker).await;
}

/// What the broker answered to a `connection.start-ok`.
#[derive(Debug, PartialEq, Eq)]
enum LoginReply {
    /// `connection.tune`: the login was accepted.
    Tune,
    /// `connection.close` with this reply code.
    Close(u16),
    /// Anything else, or the socket closed.
    Other(String),
}

/// A hand-driven handshake up to the login, from a chosen local address.
struct RawLogin {
    stream: tokio::net::TcpStream,
    buf: Vec<u8>,
    /// The reply text of the last `connection.close` [`RawLogin::login`] received.
    close_text: String,
}

impl RawLogin {
    async fn connect(server: SocketAddr, from: Option<IpAddr>) -> RawLogin {
        let socket = TcpSocket::new_v4().expect("socket");
        if let Some(ip) = from {
            socket
                .bind(SocketAddr::new(ip, 0))
                .expect("bind the client address");
        }
        let stream = within("connect", socket.connect(server))
            .await
            .expect("connect");
        RawLogin {
            stream,
            buf: Vec::new(),
            close_text: String::new(),
        }
    }

    /// The address the server sees as our peer address (our local address).
    fn peer_ip(&self) -> Option<IpAddr> {
        self.stream.local_addr().ok().map(|a| a.ip())
    }

    /// The next frame from the broker (see [`raw::read_parsed_frame`]).
    async fn read_frame(&mut self) -> Option<AMQPFrame> {
        raw::read_parsed_frame(&mut self.stream, &mut self.buf).await
    }

    async fn login(&mut self, user: &str, pass: &str) -> LoginReply {
        self.stream
            .write_all(raw::PROTOCOL_HEADER)
            .await
            .expect("header");
        match self.read_frame().await {
            Some(AMQPFrame::Method(0, AMQPClass::Connection(connection::AMQPMethod::Start(_)))) => {
            }
            other => return LoginReply::Other(format!("{other:?}")),
        }
        let response = format!("\0{user}\0{pass}");
        let props = raw::failure_close_properties();
        let bytes = raw::start_ok(props, "PLAIN", response.as_bytes());
        self.stream.write_all(&bytes).await.expect("start-ok");
        match self.read_frame().await {
            Some(AMQPFrame::Method(0, AMQPClass::Connection(connection::AMQPMethod::Tune(_)))) => {
                LoginReply::Tune
            }
            Some(AMQPFrame::Method(0, AMQPClass::Connection(connection::AMQPMethod::Close(c)))) => {
                self.close_text = c.reply_text.as_str().to_owned();
                LoginReply::Close(c.reply_code)
            }
            other => LoginReply::Other(format!("{other:?}")),
        }
    }

    /// After a refused login: sends `channel.open` on channel 1 regardless and returns what
    /// comes back (`None` when the broker closed the socket instead).
    async fn open_channel_after_refusal(&mut self) -> Option<AMQPFrame> {
        let bytes = raw::channel_open(1);
        // The broker may already have closed the socket: a failed write is that answer too.
        if self.stream.write_all(&bytes).await.is_err() {
            return None;
        }
        self.read_frame().await
    }

    /// True when the broker closes the socket (after we stop sending) within the deadline.
    async fn at_eof(&mut self) -> bool {
        let _ = self.stream.shutdown().await;
        let mut scratch = [0u8; 256];
        matches!(
            within("eof", self.stream.read(&mut scratch)).await,
            Ok(0) | Err(_)
        )
    }
}
