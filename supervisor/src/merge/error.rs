//! Why a merge did not happen.

use std::fmt;

#[derive(Debug)]
pub enum MergeError {
    /// The shards do not add up to the job: one is missing, incomplete,
    /// running, from another job, or of another count. One line per problem,
    /// each naming its shard. Nothing was written (exit 2).
    Refused(Vec<String>),
    /// The merged files could not be written; the job's own files are as
    /// they were (exit 3).
    Failed(anyhow::Error),
}

impl MergeError {
    pub(super) fn refused(line: impl Into<String>) -> Self {
        MergeError::Refused(vec![line.into()])
    }
}

impl fmt::Display for MergeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MergeError::Refused(lines) => {
                for (i, line) in lines.iter().enumerate() {
                    if i > 0 {
                        f.write_str("\n")?;
                    }
                    f.write_str(line)?;
                }
                Ok(())
            }
            MergeError::Failed(error) => write!(f, "{error:#}"),
        }
    }
}

impl From<anyhow::Error> for MergeError {
    fn from(error: anyhow::Error) -> Self {
        MergeError::Failed(error)
    }
}
