//! The deployment recipes in `broker/dist/` work as written (issue 20, "Done means" 5). No
//! container engine runs in CI, so the test reads the files and runs what they say against the
//! real broker binaries:
//! - the Dockerfile: it is multi-stage, runs as a non-root user, keeps its data in a volume and
//!   has a health check; its `ENTRYPOINT` + `CMD` run with its `ENV` (the listen addresses
//!   moved to 127.0.0.1 ports, the volume to a temporary directory, and the first user given
//!   with `-e` as a user would), its `HEALTHCHECK` command fails before the broker is up and
//!   passes once it is, `STOPSIGNAL` stops it cleanly, and a restart on the same volume keeps
//!   the data and the first user;
//! - the systemd unit: its `ExecStart` line runs with `${STATE_DIRECTORY}` and its
//!   `Environment`/`EnvironmentFile` (the shipped `lepus.env`), the broker serves, and
//!   `KillSignal` stops it cleanly; `systemd-analyze verify` accepts the unit where it is
//!   installed.
//!
//! Only the binaries' directory (`/usr/local/bin` → Cargo's build) and the addresses change;
//! every argument is used as written.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod common;
use common::ports::free_port;

const DIST: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/dist");

/// Where the recipes install the binaries, and where Cargo built them.
fn binary(path: &str) -> String {
    match path {
        "/usr/local/bin/lepus-broker" => env!("CARGO_BIN_EXE_lepus-broker").to_owned(),
        "/usr/local/bin/lepusctl" => env!("CARGO_BIN_EXE_lepusctl").to_owned(),
        other => other.to_owned(),
    }
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lepus-deploy-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A Dockerfile's instructions, continuation lines joined, comments dropped.
fn instructions(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if current.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        if let Some(cont) = trimmed.strip_suffix('\\') {
            current.push_str(cont);
            current.push(' ');
            continue;
        }
        current.push_str(trimmed);
        let (word, rest) = current.split_once(' ').unwrap_or((&current, ""));
        out.push((word.to_uppercase(), rest.trim().to_owned()));
        current.clear();
    }
    out
}

/// `KEY=value KEY2=value2` of an ENV instruction.
fn env_pairs(rest: &str) -> Vec<(String, String)> {
    rest.split_whitespace()
        .map(|kv| {
            let (k, v) = kv.split_once('=').expect("ENV in KEY=value form");
            (k.to_owned(), v.trim_matches('"').to_owned())
        })
        .collect()
}

/// A JSON-array (exec form) command.
fn exec_form(rest: &str) -> Vec<String> {
    serde_json::from_str(rest).unwrap_or_else(|_| panic!("exec form expected: {rest}"))
}

/// A running broker process, killed if the test fails before stopping it.
struct Running {
    child: Child,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `argv` with exactly `env` (plus PATH) and waits for its "listening" line.
fn start(argv: &[String], env: &BTreeMap<String, String>) -> Running {
    let mut child = Command::new(binary(&argv[0]))
        .args(&argv[1..])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the broker");
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    assert!(line.starts_with("lepus-broker listening on"), "{line:?}");
    Running { child }
}

/// Sends `signal` and waits (up to 30 s) for a clean exit.
fn stop(mut running: Running, signal: &str) {
    let pid = running.child.id().to_string();
    let status = Command::new("kill")
        .args([format!("-{signal}"), pid])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = running.child.try_wait().unwrap() {
            assert!(status.success(), "the broker exited with {status}");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the broker did not stop on {signal}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs a command (a health check) with `env`; its exit status.
fn run(argv: &[String], env: &BTreeMap<String, String>) -> bool {
    Command::new(binary(&argv[0]))
        .args(&argv[1..])
        .env_clear()
        .envs(env)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

fn api(
    port: u16,
    method: &str,
    path: &str,
    auth: (&str, &str),
    body: Option<Value>,
) -> (u16, Value) {
    use base64::Engine;
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", auth.0, auth.1));
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let url = format!("http://127.0.0.1:{port}{path}");
    let mut resp = match method {
        "GET" => agent
            .get(&url)
            .header("Authorization", format!("Basic {token}"))
            .call(),
        _ => agent
            .put(&url)
            .header("Authorization", format!("Basic {token}"))
            .send_json(body.unwrap_or(json!({}))),
    }
    .unwrap();
    let status = resp.status().as_u16();
    let text = common::http::body_text(&mut resp).expect("read the whole answer");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[test]
fn the_container_recipe_runs_as_written() {
    let text = std::fs::read_to_string(format!("{DIST}/Dockerfile")).unwrap();
    let all = instructions(&text);
    // Multi-stage: the last FROM starts the image that ships.
    let stages = all.iter().filter(|(w, _)| w == "FROM").count();
    assert!(stages >= 2, "multi-stage build");
    let last_from = all.iter().rposition(|(w, _)| w == "FROM").unwrap();
    let image = &all[last_from..];
    let one = |word: &str| -> String {
        image
            .iter()
            .rev()
            .find(|(w, _)| w == word)
            .map(|(_, r)| r.clone())
            .unwrap_or_else(|| panic!("no {word} in the final stage"))
    };
    let user = one("USER");
    assert!(
        !user.starts_with("root") && !user.starts_with('0'),
        "runs as {user}"
    );
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    for (_, rest) in image.iter().filter(|(w, _)| w == "ENV") {
        env.extend(env_pairs(rest));
    }
    let volume: Vec<String> = exec_form(&one("VOLUME"));
    assert_eq!(
        volume,
        [env["LEPUS_DATA_DIR"].clone()],
        "the data directory is the volume"
    );
    let exposed = one("EXPOSE");
    for key in ["LEPUS_LISTEN", "LEPUS_MANAGEMENT_LISTEN"] {
        let port = env[key].rsplit(':').next().unwrap();
        assert!(
            exposed.split_whitespace().any(|p| p == port),
            "{key} port exposed"
        );
    }
    let healthcheck = one("HEALTHCHECK");
    let check = exec_form(healthcheck.split_once("CMD ").expect("HEALTHCHECK CMD").1);
    let mut argv = exec_form(&one("ENTRYPOINT"));
    argv.extend(exec_form(&one("CMD")));
    assert_eq!(one("STOPSIGNAL"), "SIGTERM");

    // `docker run -v lepus-data:/var/lib/lepus -e LEPUS_DEFAULT_USER=admin -e ...`, on loopback.
    let volume_dir = temp_dir("volume");
    let (amqp, http) = (free_port(), free_port());
    env.insert("LEPUS_DATA_DIR".into(), volume_dir.display().to_string());
    env.insert("LEPUS_LISTEN".into(), format!("127.0.0.1:{amqp}"));
    env.insert(
        "LEPUS_MANAGEMENT_LISTEN".into(),
        format!("127.0.0.1:{http}"),
    );
    env.insert("LEPUS_DEFAULT_USER".into(), "admin".into());
    env.insert("LEPUS_DEFAULT_PASS".into(), "s3cret-pass".into());

    assert!(!run(&check, &env), "the health check passes with no broker");
    let broker = start(&argv, &env);
    assert!(
        run(&check, &env),
        "the health check fails on a serving broker"
    );
    // The first user is the administrator; guest was not made.
    let (s, me) = api(http, "GET", "/api/whoami", ("admin", "s3cret-pass"), None);
    assert_eq!((s, me["tags"].clone()), (200, json!(["administrator"])));
    assert_eq!(
        api(http, "GET", "/api/whoami", ("guest", "guest"), None).0,
        401
    );
    let (s, _) = api(
        http,
        "PUT",
        "/api/queues/%2F/survives",
        ("admin", "s3cret-pass"),
        Some(json!({"durable": true})),
    );
    assert_eq!(s, 201);
    // RabbitMQ's health endpoints, for probes that log in.
    for path in [
        "/api/health/checks/alarms".to_owned(),
        "/api/health/checks/local-alarms".to_owned(),
        format!("/api/health/checks/port-listener/{amqp}"),
    ] {
        let (s, v) = api(http, "GET", &path, ("admin", "s3cret-pass"), None);
        assert_eq!((s, v["status"].clone()), (200, json!("ok")), "{path}");
    }
    stop(broker, "TERM");
    assert!(!run(&check, &env), "the health check passes after the stop");

    // A restart on the same volume keeps the queue and the users, whatever -e now says.
    env.insert("LEPUS_DEFAULT_PASS".into(), "another".into());
    let broker = start(&argv, &env);
    let (s, q) = api(
        http,
        "GET",
        "/api/queues/%2F/survives",
        ("admin", "s3cret-pass"),
        None,
    );
    assert_eq!((s, q["durable"].clone()), (200, json!(true)));
    assert_eq!(
        api(http, "GET", "/api/whoami", ("admin", "another"), None).0,
        401
    );
    stop(broker, "TERM");
    std::fs::remove_dir_all(&volume_dir).unwrap();
}

/// `KEY=value` lines of an environment file (systemd's EnvironmentFile syntax, without
/// quoting, which the shipped file does not use).
fn env_file(path: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap();
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

#[test]
fn the_systemd_unit_runs_as_written() {
    let text = std::fs::read_to_string(format!("{DIST}/lepus-broker.service")).unwrap();
    let service: Vec<(String, String)> = text
        .lines()
        .skip_while(|l| l.trim() != "[Service]")
        .skip(1)
        .take_while(|l| !l.starts_with('['))
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap();
            (k.trim().to_owned(), v.trim().to_owned())
        })
        .collect();
    let key = |k: &str| -> Vec<String> {
        service
            .iter()
            .filter(|(have, _)| have == k)
            .map(|(_, v)| v.clone())
            .collect()
    };
    assert_eq!(key("StateDirectory"), ["lepus"]);
    assert!(
        key("DynamicUser") == ["yes"] || !key("User").is_empty(),
        "runs as a dedicated user"
    );
    assert_eq!(key("KillSignal"), ["SIGTERM"]);
    let exec = key("ExecStart");
    assert_eq!(exec.len(), 1);

    // systemd's environment for the service: StateDirectory's path, Environment= lines, then
    // the EnvironmentFile (the shipped example), with the listeners moved to loopback ports.
    let state = temp_dir("state");
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    env.insert("STATE_DIRECTORY".into(), state.display().to_string());
    for line in key("Environment") {
        let (k, v) = line.split_once('=').unwrap();
        env.insert(k.to_owned(), v.to_owned());
    }
    for file in key("EnvironmentFile") {
        assert_eq!(file.trim_start_matches('-'), "/etc/lepus/lepus.env");
        env.extend(env_file(Path::new(&format!("{DIST}/lepus.env"))));
    }
    let (amqp, http) = (free_port(), free_port());
    env.insert("LEPUS_LISTEN".into(), format!("127.0.0.1:{amqp}"));
    env.insert(
        "LEPUS_MANAGEMENT_LISTEN".into(),
        format!("127.0.0.1:{http}"),
    );
    // ExecStart with systemd's ${VAR} expansion (each word one argument).
    let argv: Vec<String> = exec[0]
        .split_whitespace()
        .map(|w| {
            let mut w = w.to_owned();
            for (k, v) in &env {
                w = w.replace(&format!("${{{k}}}"), v);
            }
            assert!(!w.contains("${"), "unexpanded {w}");
            w
        })
        .collect();
    let broker = start(&argv, &env);
    let check = vec![
        "/usr/local/bin/lepusctl".to_owned(),
        "check_port_connectivity".to_owned(),
    ];
    assert!(run(&check, &env));
    let (s, _) = api(http, "GET", "/api/whoami", ("guest", "guest"), None);
    assert_eq!(s, 200);
    // The state went where systemd says.
    assert!(state.join("access.json").exists());
    stop(broker, "TERM");

    // systemd's own check of the unit, where systemd-analyze is installed.
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        let dir = temp_dir("unit");
        let unit = dir.join("lepus-broker.service");
        std::fs::write(
            &unit,
            text.replace(
                "/usr/local/bin/lepus-broker",
                &binary("/usr/local/bin/lepus-broker"),
            ),
        )
        .unwrap();
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(&unit)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "systemd-analyze verify: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::remove_dir_all(&dir).unwrap();
    } else {
        eprintln!("systemd-analyze not installed: the unit's syntax check is skipped");
    }
    std::fs::remove_dir_all(&state).unwrap();
}

#[test]
fn the_recipe_readers_read_what_they_should() {
    let ins = instructions("FROM a AS b\n# c\nENV A=1 \\\n    B=2\nCMD [\"x\"]\n");
    assert_eq!(
        ins,
        [
            ("FROM".to_owned(), "a AS b".to_owned()),
            ("ENV".to_owned(), "A=1  B=2".to_owned()),
            ("CMD".to_owned(), "[\"x\"]".to_owned()),
        ]
    );
    assert_eq!(
        env_pairs("A=1  B=2"),
        [
            ("A".to_owned(), "1".to_owned()),
            ("B".to_owned(), "2".to_owned())
        ]
    );
}
