//! The run report: gathered from the run's events (`collector`), shaped as
//! JSON (`schema`), written for `--report FILE` (`file`) and told in two
//! lines at the end (`summary`).

mod collector;
mod file;
mod schema;
mod summary;

#[cfg(test)]
mod tests;

pub use collector::{FAILED_LIST_CAP, ReportCollector, ReportInput};
pub use file::write_report;
pub use schema::{REPORT_VERSION, Report, ShardReport};
pub use summary::summary;
