//! Where the log and snapshot writers run.

use std::future::Future;
use std::io;

/// Where the log and snapshot writers run. Their disk calls block (write(2),
/// fsync), so in a node each gets a thread of its own, with a runtime of
/// its own for its timers. A simulator whose disks are memory runs them as
/// tasks of the node's runtime instead, so that its scheduler, not the
/// OS's, orders their work and its clock times the `everysec` syncs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum WriterHost {
    #[default]
    Thread,
    /// A task of the current tokio runtime: only for disks that never block.
    Task,
}

impl WriterHost {
    pub(crate) fn spawn(self, name: &str, work: impl Future<Output = ()> + Send + 'static) -> io::Result<()> {
        match self {
            WriterHost::Thread => {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build()?;
                spawn_thread(name, move || runtime.block_on(work))
            }
            WriterHost::Task => {
                // Owned through the writer's channel: it ends when its
                // handle closes it or is dropped, and a simulated crash drops
                // it with the rest of the node's tasks.
                drop(tokio::spawn(work));
                Ok(())
            }
        }
    }
}

#[allow(clippy::disallowed_methods, reason = "the production writer host: a thread per writer")]
fn spawn_thread(name: &str, work: impl FnOnce() + Send + 'static) -> io::Result<()> {
    std::thread::Builder::new().name(name.into()).spawn(work).map(drop)
}
