//! `accounts-web --url amqp://...`: runs a session against the accounts service served by
//! `accounts-server` on the broker at the URL, printing what happens.

use std::time::Duration;

use accounts_web::Front;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = match (args.next().as_deref(), args.next()) {
        (Some("--url"), Some(url)) => url,
        (None, _) => std::env::var("LEPUS_URL")
            .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned()),
        _ => return Err("usage: accounts-web [--url AMQP_URL]".into()),
    };
    let conn = lepus::connect(&url).await?;
    let client = lepus::Client::new(&conn).await?;
    let front = Front::new(&client, Duration::from_secs(5));

    // A name of this run's own, so runs against a long-lived server do not collide.
    let who = format!("alice-{}", std::process::id());
    let (balance, overdraft) = front.session(&who).await?;
    println!("{who}: balance {balance} cents; the overdraft was refused: {overdraft}");
    match front.accounts().get_balance("nobody".to_owned()).await {
        Err(lepus::Error::Remote(e)) => println!("typed remote error: {e}"),
        other => return Err(format!("expected a typed remote error, got {other:?}").into()),
    }
    conn.close().await;
    Ok(())
}
