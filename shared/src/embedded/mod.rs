//! Every adapter of the self-hosted backend, behind the `embedded` cargo feature.
//!
//! - [`sqlite`]: the state store ([`SqliteStore`], an [`ItemStore`](crate::store::ItemStore))
//!   on one SQLite file, with group commit.
//! - [`objects`]: backup objects as files in a directory. [`key_file`]: backup data keys
//!   wrapped by a local master key.
//! - [`channel`]: the notification publisher that hands notifications to `shipgate serve`'s
//!   in-process notifier.
//! - [`backups`]: `TableBackups::embedded`, the backup jobs wired to the above.

pub mod backups;
pub mod channel;
pub mod key_file;
pub mod objects;
pub mod sqlite;

pub use channel::ChannelPublisher;
pub use key_file::LocalKeyFile;
pub use objects::LocalDirObjects;
pub use sqlite::{Durability, SqliteStore};
