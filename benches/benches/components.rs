//! The component micro-benchmarks under criterion: the same cases as
//! `cargo run --release -p shoplens-benches -- components` (see
//! `shoplens_benches::components`), with criterion's statistics and reports.
//!
//! `cargo bench -p shoplens-benches` (reports in `target/criterion`).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn components(c: &mut Criterion) {
    let (_fixture, cases) = shoplens_benches::components::cases(false).expect("set up the cases");
    let mut group = c.benchmark_group("components");
    for mut case in cases {
        group.throughput(Throughput::Elements(case.elements));
        group.bench_function(case.name, |b| b.iter(&mut case.run));
    }
    group.finish();
}

criterion_group!(benches, components);
criterion_main!(benches);
