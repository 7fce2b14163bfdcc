//! Return types are read by the type system (`lepus::Returns`): aliases of `Result` are
//! failures when `Err`, plain values never are; `queue = ` takes constants; the attributes work
//! inside a function body; `?` turns a `lepus::Error` into a `lepus::Error<E>`.
use serde::{Deserialize, Serialize};

type JobResult = Result<(), String>;

#[derive(Debug, Serialize, Deserialize, thiserror::Error)]
#[error("account error")]
pub struct AccountError;

pub type AccountResult<T> = Result<T, AccountError>;

#[derive(Debug, Serialize, Deserialize, lepus::Plain)]
pub struct Balance {
    pub cents: u64,
}

#[derive(Debug, Serialize, Deserialize, lepus::Plain)]
pub struct Page<T> {
    pub items: Vec<T>,
}

const QUEUE: &str = "accounts";
const PREFIXED: &str = concat!("billing", ".", "v2");

#[lepus::rpc(queue = QUEUE)]
async fn balance(account: String) -> AccountResult<Balance> {
    let _ = account;
    Ok(Balance { cents: 0 })
}

#[lepus::rpc(queue = PREFIXED)]
async fn page(n: u32) -> Page<u32> {
    Page { items: vec![n] }
}

#[lepus::rpc(queue = "accounts")]
async fn parse(text: String) -> anyhow::Result<u64> {
    Ok(text.parse()?)
}

#[lepus::rpc(queue = "accounts")]
async fn read(path: String) -> std::io::Result<Vec<String>> {
    let _ = path;
    Ok(Vec::new())
}

#[lepus::rpc(queue = "accounts")]
async fn render(n: u32) -> std::fmt::Result {
    let _ = n;
    Ok(())
}

#[lepus::task(queue = QUEUE)]
async fn job(n: u32) -> JobResult {
    let _ = n;
    Ok(())
}

#[lepus::task(queue = "jobs")]
async fn boxed(n: u32) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let _ = n;
    Ok(())
}

#[lepus::task(queue = "jobs")]
async fn with_eyre(n: u32) -> eyre::Result<()> {
    let _ = n;
    Ok(())
}

#[lepus::event(exchange = "audit", kind = "fanout", queue = PREFIXED)]
async fn audit(line: String) -> anyhow::Result<()> {
    let _ = line;
    Ok(())
}

/// `?` from the errors of connecting and enqueueing into the typed error of a call.
async fn uses_question_mark(url: &str) -> Result<Balance, lepus::Error<AccountError>> {
    let conn = lepus::connect(url).await?;
    let client = lepus::Client::new(&conn).await?;
    job::enqueue(&client, 1).await?;
    let _: lepus::Error<std::io::Error> = lepus::Error::<lepus::Never>::Closed.widen();
    balance::call_with(
        &client,
        "ann".into(),
        lepus::CallOptions::default().queue("accounts.eu"),
    )
    .await
}

fn main() {
    // Inside a function body, with types declared there.
    #[derive(Debug, Serialize, Deserialize)]
    struct Req {
        n: u32,
    }

    #[lepus::rpc(queue = "local")]
    async fn local(req: Req) -> Result<u32, String> {
        Ok(req.n)
    }

    #[lepus::task(queue = "local.jobs")]
    async fn local_job(req: Req) -> anyhow::Result<()> {
        let _ = req;
        Ok(())
    }

    let _ = local::handler();
    let _ = local_job::handler();
    let _: &str = balance::QUEUE;
    assert_eq!(page::QUEUE, "billing.v2");
    let _ = (
        parse::handler(),
        read::handler(),
        render::handler(),
        boxed::handler(),
        with_eyre::handler(),
        audit::handler(),
    );
    let _ = uses_question_mark;
    let _ = lepus::EnqueueOptions::new().queue("jobs.eu");
}
