//! `rayon-squares N PARTS THREADS`: the squares sum over `[0, N)` in PARTS parts on
//! a rayon pool of THREADS threads, the in-process bound for the supervisor's CPU job.

use rayon::prelude::*;

fn main() {
    let usage = "rayon-squares N PARTS THREADS";
    let args: Vec<String> = std::env::args().collect();
    let n = bench_peers::arg(&args, 1, usage);
    let parts = bench_peers::arg(&args, 2, usage).max(1);
    let threads = bench_peers::arg(&args, 3, usage).max(1);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(usize::try_from(threads).unwrap())
        .build()
        .unwrap();
    let total: u64 = pool.install(|| {
        (0..parts)
            .into_par_iter()
            .map(|k| {
                let (start, end) = bench_peers::part(n, parts, k);
                bench_peers::squares(start, end)
            })
            .sum()
    });
    println!("{total}");
}
