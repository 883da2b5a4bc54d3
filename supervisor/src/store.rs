//! Where settled chunks go and stay: the output (`output`), the failed file
//! (`failures`), both tied to the journal and committed in groups by the
//! [`Store`] (`files`), which `open` sets up as the assessment decided; and
//! where results wait for their turn when memory is full (`spill`).

mod failures;
mod files;
mod open;
mod output;
mod spill;

pub use failures::FailureWriter;
pub use files::Store;
pub use open::{Opened, open};
pub use output::ResultWriter;
pub use spill::FileSpill;
