//! Benchmarks and the throughput runner land here with the pipeline (see docs/architecture.md).

pub mod ratio;
