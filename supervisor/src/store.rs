//! Where settled chunks go and stay: the output (`output`), the failed file
//! (`failures`), both tied to the journal and committed in groups by the
//! [`Store`] (`files`), which `open` sets up as the assessment decided.

mod failures;
mod files;
mod open;
mod output;

pub use failures::FailureWriter;
pub use files::Store;
pub use open::{Opened, open};
pub use output::ResultWriter;
