//! `lepus-difftest`: run random AMQP programs against RabbitMQ and the bundled broker and
//! report where they differ. See `difftest/README.md`.

use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use lepus_difftest::campaign::{fresh_vhost, Campaign, Pair, Prefixes, ShrinkBudget, Tested};
use lepus_difftest::client::Endpoint;
use lepus_difftest::generate::{self, Shape};
use lepus_difftest::program::Program;
use lepus_difftest::runner::RunConfig;
use lepus_difftest::trace::compare;

#[derive(Parser)]
#[command(about = "Differential tester: the bundled broker against RabbitMQ")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// RabbitMQ, the reference (`--rabbit`), for the commands that run programs on it.
#[derive(clap::Args, Clone)]
struct Reference {
    /// RabbitMQ, the reference.
    #[arg(
        long,
        env = "LEPUS_TEST_AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    rabbit: String,
}

#[derive(clap::Args, Clone)]
struct Brokers {
    #[command(flatten)]
    reference: Reference,
    /// The broker under test; default: a fresh in-process bundled broker per program.
    #[arg(long)]
    lepus: Option<String>,
    /// Compare RabbitMQ with itself (measures the tester's own noise).
    #[arg(long)]
    self_check: bool,
    /// Pause after operations that close or delete something, in ms.
    #[arg(long, default_value_t = 20)]
    settle_ms: u64,
    /// How to run rabbitmqctl for the reference node (e.g. `rabbitmqctl -n difftest@localhost`).
    /// With it every job gets a fresh vhost of its own (`difftest-<n>`, deleted and created at
    /// the start), which more than one job needs; without it programs run in the URL's vhost,
    /// where leftovers of interrupted runs bound to the predeclared exchanges show as
    /// differences.
    #[arg(long)]
    rabbitmqctl: Option<String>,
}

impl Brokers {
    /// One pair per job.
    fn pairs(&self, jobs: usize) -> Result<Vec<Arc<Pair>>, String> {
        let base = Endpoint::parse(&self.reference.rabbit).map_err(|e| e.to_string())?;
        let jobs = jobs.max(1);
        if jobs > 1 && (self.rabbitmqctl.is_none() || self.lepus.is_some()) {
            return Err(
                "more than one job needs --rabbitmqctl (a vhost per job) and the in-process broker"
                    .into(),
            );
        }
        let mut pairs = Vec::new();
        for job in 0..jobs {
            let mut reference = base.clone();
            let mut tested_url = self.lepus.clone();
            if let Some(ctl) = &self.rabbitmqctl {
                let vhost = format!("difftest-{job}");
                fresh_vhost(ctl, &vhost, &base.user)?;
                reference.vhost = vhost;
                if self.self_check {
                    let other = format!("difftest-{job}-b");
                    fresh_vhost(ctl, &other, &base.user)?;
                    tested_url = Some(format!(
                        "amqp://{}:{}@{}/{other}",
                        base.user, base.password, base.addr
                    ));
                }
            } else if self.self_check {
                tested_url = Some(self.reference.rabbit.clone());
            }
            let sequential = self.self_check && self.rabbitmqctl.is_none();
            pairs.push(Arc::new(Pair {
                reference,
                tested: tested_url.map_or(Tested::InProcess, Tested::Url),
                config: RunConfig {
                    settle_delay: Duration::from_millis(self.settle_ms),
                    ..RunConfig::default()
                },
                prefixes: Prefixes::default(),
                sequential,
            }));
        }
        Ok(pairs)
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run a campaign of random programs.
    Run {
        #[command(flatten)]
        brokers: Brokers,
        /// Generator seed (default: from the clock; printed).
        #[arg(long)]
        seed: Option<u64>,
        /// Programs to run.
        #[arg(long, default_value_t = 200)]
        programs: u64,
        /// Index of the first program.
        #[arg(long, default_value_t = 0)]
        first: u64,
        /// Operations per program.
        #[arg(long, default_value_t = 60)]
        ops: usize,
        /// Programs run at once (more than one needs --rabbitmqctl).
        #[arg(long, default_value_t = 1)]
        jobs: usize,
        /// Do not shrink failures.
        #[arg(long)]
        no_shrink: bool,
        /// Stop after this many diverging programs (0: run them all).
        #[arg(long, default_value_t = 0)]
        max_failures: u64,
    },
    /// Print one generated program.
    Show {
        /// Generator seed.
        #[arg(long)]
        seed: u64,
        /// Program index.
        #[arg(long, default_value_t = 0)]
        index: u64,
        /// Operations per program.
        #[arg(long, default_value_t = 60)]
        ops: usize,
    },
    /// Run a program file on RabbitMQ only and print it as a regression test (RabbitMQ's
    /// trace is the expectation), a case for the `regressions!` block of
    /// `difftest/tests/regressions.rs`.
    Expect {
        #[command(flatten)]
        reference: Reference,
        /// The test function's name.
        #[arg(long)]
        name: String,
        /// What the test is about (a doc comment line).
        #[arg(long, default_value = "")]
        about: String,
        /// The program (text form).
        file: std::path::PathBuf,
    },
    /// Run a program file on both brokers and print both traces and the first difference.
    Replay {
        #[command(flatten)]
        brokers: Brokers,
        /// The program (text form).
        file: std::path::PathBuf,
    },
}

fn main() -> std::process::ExitCode {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::from(2)
        }
    }
}

async fn run(command: Command) -> Result<bool, String> {
    match command {
        Command::Show { seed, index, ops } => {
            print!(
                "{}",
                generate::program(
                    seed,
                    index,
                    &Shape {
                        ops,
                        ..Shape::default()
                    }
                )
            );
            Ok(true)
        }
        Command::Expect {
            reference,
            name,
            about,
            file,
        } => {
            let text = std::fs::read_to_string(&file).map_err(|e| format!("{file:?}: {e}"))?;
            let program: Program = text.parse().map_err(|e| format!("{file:?}: {e}"))?;
            let endpoint = Endpoint::parse(&reference.rabbit).map_err(|e| e.to_string())?;
            let trace = lepus_difftest::runner::run(
                &endpoint,
                &Prefixes::default().next(),
                &program,
                &RunConfig::default(),
            )
            .await?;
            print!(
                "{}",
                lepus_difftest::campaign::regression_test(&name, &about, &program, &trace)
            );
            Ok(true)
        }
        Command::Replay { brokers, file } => {
            let text = std::fs::read_to_string(&file).map_err(|e| format!("{file:?}: {e}"))?;
            let program: Program = text.parse().map_err(|e| format!("{file:?}: {e}"))?;
            let pairs = brokers.pairs(1)?;
            let (reference, tested) = pairs[0].run(&program).await?;
            println!("=== RabbitMQ\n{}", reference.render());
            println!("=== tested\n{}", tested.render());
            match compare(&reference, &tested) {
                None => {
                    println!("no difference");
                    Ok(true)
                }
                Some(d) => {
                    println!("{}", d.describe());
                    Ok(false)
                }
            }
        }
        Command::Run {
            brokers,
            seed,
            programs,
            first,
            ops,
            jobs,
            no_shrink,
            max_failures,
        } => {
            let seed = seed.unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_secs())
            });
            eprintln!(
                "difftest: seed {seed}, programs {first}..{}, {ops} operations each",
                first + programs
            );
            let campaign = Campaign {
                pairs: brokers.pairs(jobs)?,
                seed,
                first,
                count: programs,
                shape: Shape {
                    ops,
                    ..Shape::default()
                },
                shrink: (!no_shrink).then(ShrinkBudget::default),
                progress_every: 50,
                max_failures,
            };
            let started = std::time::Instant::now();
            let report = campaign.run().await;
            println!(
                "difftest: seed {seed}: {} programs, {} operations per broker, {} diverged, {:.0} s",
                report.programs,
                report.operations,
                report.failed(),
                started.elapsed().as_secs_f64()
            );
            for (sig, (count, s, i)) in &report.divergences {
                println!("  {count:>6} x {sig}   (first: --seed {s} program {i})");
            }
            for (sig, (count, s, i)) in &report.unconfirmed {
                println!("  {count:>6} x unconfirmed: {sig}   (first: --seed {s} program {i})");
            }
            for e in &report.errors {
                println!("  error: {e}");
            }
            for case in &report.cases {
                println!("\n{case}");
            }
            Ok(report.failed() == 0 && report.errors.is_empty())
        }
    }
}
