//! The bench's baseline: one SQL query run directly on DataFusion (the same
//! version and session settings CityTrust uses) over one Parquet file, with no
//! HTTP, no governance and no logging. Prints the best and median wall time.
//!
//! cargo run --release --example sql_direct -- FILE.parquet TABLE "SELECT …" [RUNS]

use std::time::Instant;

use citytrust_query::datafusion::prelude::{ParquetReadOptions, SessionContext};
use futures::StreamExt;

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, file, table, sql, rest @ ..] = args.as_slice() else {
        return Err("usage: sql_direct FILE.parquet TABLE SQL [RUNS]".into());
    };
    let runs: usize = rest.first().map(|r| r.parse()).transpose()?.unwrap_or(5);
    let mut times = Vec::new();
    let mut rows = 0;
    for _ in 0..runs {
        let started = Instant::now();
        let ctx = SessionContext::new_with_config(citytrust_query::export::config());
        ctx.register_parquet(table, file, ParquetReadOptions::default())
            .await?;
        let mut stream = ctx.sql(sql).await?.execute_stream().await?;
        rows = 0;
        while let Some(batch) = stream.next().await {
            rows += batch?.num_rows();
        }
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    println!(
        "{{\"rows\": {rows}, \"best_ms\": {:.1}, \"median_ms\": {:.1}}}",
        times[0],
        times[times.len() / 2]
    );
    Ok(())
}
