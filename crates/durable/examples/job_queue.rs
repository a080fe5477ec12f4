//! A durable job queue on the embedded store (no setup): producers submit
//! jobs as casts, three workers consume them (each job runs exactly once),
//! a job that keeps failing is dead-lettered after three attempts, and a
//! snapshot read uses a priority call.
//!
//!     cargo run -p chorus-durable --example job_queue

use std::collections::BTreeMap;

use chorus_backend::EmbeddedKv;
use chorus_durable::{Durable, DurableServer, Failure, Message, Outcome, StartOptions};
use serde::{Deserialize, Serialize};

#[derive(Clone)]
struct Jobs {
    worker: &'static str,
}

#[derive(Default, Serialize, Deserialize)]
struct Board {
    /// Job id → the worker that ran it.
    done: BTreeMap<u32, String>,
    failed: Vec<u32>,
}

#[derive(Serialize, Deserialize)]
enum Job {
    Square(u32),
    /// A job whose work always fails.
    Broken(u32),
}

#[derive(Serialize, Deserialize)]
enum Query {
    Summary,
}

impl DurableServer for Jobs {
    type State = Board;
    type Call = Query;
    type Cast = Job;
    type Reply = (usize, Vec<u32>);
    type Info = ();

    fn init(&self) -> Result<Board, Failure> {
        Ok(Board::default())
    }

    fn handle_call(&self, Query::Summary: Query, board: Board) -> Result<Outcome<Self>, Failure> {
        let summary = (board.done.len(), board.failed.clone());
        Ok(Outcome::reply(summary, board))
    }

    fn handle_cast(&self, job: Job, mut board: Board) -> Result<Outcome<Self>, Failure> {
        match job {
            Job::Square(id) => {
                board.done.insert(id, self.worker.to_string());
                let worker = self.worker;
                Ok(Outcome::noreply(board)
                    .with_action(move || println!("  {worker}: job {id} -> {}", id * id)))
            }
            Job::Broken(id) => Err(format!("job {id} cannot run").into()),
        }
    }

    fn handle_dead_letter(
        &self,
        message: Message<Self>,
        attempts: u32,
        mut board: Board,
    ) -> Result<Outcome<Self>, Failure> {
        let Message::Cast(Job::Broken(id)) = message else {
            return Ok(Outcome::noreply(board));
        };
        board.failed.push(id);
        // Several consumers may race to dead-letter the job; only one
        // commits, and only its action runs.
        Ok(Outcome::noreply(board)
            .with_action(move || println!("  job {id} dead-lettered after {attempts} attempts")))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let store = EmbeddedKv::open(dir.path()).await?;
    let options = StartOptions::new("jobs")
        .dead_letter_threshold(Some(3))
        .cache(true)
        .name("jobs");
    let mut workers = Vec::new();
    for worker in ["worker-a", "worker-b", "worker-c"] {
        workers.push(Durable::start(Jobs { worker }, store.clone(), options.clone()).await?);
    }
    let producer = Durable::start(
        Jobs { worker: "producer" },
        store.clone(),
        options.clone().consume(false),
    )
    .await?;
    producer
        .cast_batch((1..=10).map(Job::Square).collect())
        .await?;
    producer.cast(Job::Broken(99)).await?;
    producer.cast(Job::Square(11)).await?;
    // A call is queued behind every job: its answer means all ran.
    let (done, failed) = producer.call(Query::Summary).await?;
    println!("done: {done} jobs, dead-lettered: {failed:?}");
    let stats = chorus_durable::stats::registered_stats(&store).await?;
    for entry in stats {
        println!(
            "registry: {} -> tenant {:?}, queue depth {}, state {} bytes, dead letters {}",
            entry.name,
            entry.stats.tenant,
            entry.stats.queue_depth,
            entry.stats.state_bytes,
            entry.stats.dead_letters
        );
    }
    for worker in &mut workers {
        worker.shutdown().await?;
    }
    Ok(())
}
