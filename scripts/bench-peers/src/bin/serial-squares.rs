//! `serial-squares N`: the squares sum over `[0, N)` on one thread, the speedup baseline.

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n = bench_peers::arg(&args, 1, "serial-squares N");
    println!("{}", bench_peers::squares(0, n));
}
