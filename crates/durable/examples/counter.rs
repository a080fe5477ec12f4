//! A durable counter on the embedded store (no setup): casts add, a call
//! reads, and the count survives closing and reopening the store.
//!
//!     cargo run -p chorus-durable --example counter

use chorus_backend::EmbeddedKv;
use chorus_durable::{Durable, DurableServer, Failure, Outcome, StartOptions};
use serde::{Deserialize, Serialize};

struct Counter;

#[derive(Serialize, Deserialize)]
enum Call {
    Get,
}

impl DurableServer for Counter {
    type State = u64;
    type Call = Call;
    type Cast = u64;
    type Reply = u64;
    type Info = ();

    fn init(&self) -> Result<u64, Failure> {
        Ok(0)
    }

    fn handle_call(&self, Call::Get: Call, count: u64) -> Result<Outcome<Self>, Failure> {
        Ok(Outcome::reply(count, count))
    }

    fn handle_cast(&self, add: u64, count: u64) -> Result<Outcome<Self>, Failure> {
        Ok(Outcome::noreply(count + add)
            .with_action(move || println!("  committed: +{add} (after the txn)")))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let store = EmbeddedKv::open(dir.path()).await?;
    let mut counter = Durable::start(Counter, store.clone(), StartOptions::new("counter")).await?;
    for add in [1, 2, 3] {
        counter.cast(add).await?;
    }
    println!("count = {}", counter.call(Call::Get).await?);
    counter.shutdown().await?;
    drop(counter);
    store.shutdown().await?;

    // A new process, the same data directory: the state is still there.
    let store = EmbeddedKv::open(dir.path()).await?;
    let counter = Durable::start(Counter, store.clone(), StartOptions::new("counter")).await?;
    counter.cast(10).await?;
    println!(
        "after a restart: count = {}",
        counter.call(Call::Get).await?
    );
    Ok(())
}
