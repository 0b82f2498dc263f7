//! The member file: this data directory belongs to a ring member, last
//! alive at a given time, whose ring held these peers and who fenced these
//! members.

use std::io::Read;
use std::sync::Arc;

use ringkv_core::ring::NodeName;
use ringkv_storage::Disk;

const NAME: &str = "member";
const TMP: &str = "member.tmp";

/// The file that says this data directory belongs to a ring member, when
/// that member was last alive (wall-clock ms), which other members its
/// ring held then and which members it had fenced. On the node's `Disk`,
/// so that a simulated crash loses an update that was not synced, as a
/// power loss would.
pub(crate) struct MemberFile {
    disk: Arc<dyn Disk>,
}

/// What the member file says.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Membered {
    pub last_alive_ms: u64,
    /// The other members of the ring it last held a place in. A member that
    /// had some must not serve alone when it returns (simulator seed 660:
    /// it started alone on hearing nobody, acknowledged writes, then was
    /// fenced and discarded them). `None` from a v1 file, which did not
    /// record them.
    pub peers: Option<Vec<NodeName>>,
    /// The members it fenced, as `membership.rs` keeps them; empty from a
    /// v1 or v2 file.
    pub fences: Vec<String>,
}

impl MemberFile {
    pub(crate) fn new(disk: Arc<dyn Disk>) -> MemberFile {
        MemberFile { disk }
    }

    pub(crate) fn read(&self) -> Option<Membered> {
        let mut text = String::new();
        self.disk.open_read(NAME).ok()?.read_to_string(&mut text).ok()?;
        let field = |name: &str| text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix('='));
        let list = |name: &str| {
            field(name).map(|list| list.split(',').map(str::trim).filter(|n| !n.is_empty()).collect::<Vec<_>>())
        };
        match field("last_alive_ms").and_then(|v| v.trim().parse().ok()) {
            Some(last_alive_ms) => Some(Membered {
                last_alive_ms,
                peers: list("peers").map(|names| names.into_iter().map(NodeName::from).collect()),
                fences: list("fences").unwrap_or_default().into_iter().map(str::to_string).collect(),
            }),
            None => {
                let file = self.disk.path(NAME);
                tracing::warn!(file = %file.display(), "unreadable member file; joining as a new member");
                None
            }
        }
    }

    /// Replaces the file whole (written, synced, renamed over the old one),
    /// so that a crash leaves either the old contents or the new. Returns
    /// whether it was written.
    pub(crate) fn touch(&self, now_ms: u64, peers: &[NodeName], fences: &[String]) -> bool {
        let peers: Vec<&str> = peers.iter().map(|n| &**n).collect();
        let text = format!(
            "ringkv member file v3\nlast_alive_ms={now_ms}\npeers={}\nfences={}\n",
            peers.join(","),
            fences.join(",")
        );
        let written = self.disk.create(TMP).and_then(|mut file| {
            file.write_all(text.as_bytes())?;
            file.sync()
        });
        if let Err(e) = written.and_then(|()| self.disk.rename(TMP, NAME)) {
            let file = self.disk.path(NAME);
            tracing::warn!(file = %file.display(), error = %e, "cannot update the member file");
            return false;
        }
        true
    }

    pub(crate) fn remove(&self) {
        if let Err(e) = self.disk.remove(NAME)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            let file = self.disk.path(NAME);
            tracing::warn!(file = %file.display(), error = %e, "cannot remove the member file");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_member_file_round_trips_and_a_crash_keeps_only_what_was_synced() {
        let disk = Arc::new(ringkv_storage::MemDisk::new());
        let file = MemberFile::new(disk.clone());
        assert_eq!(file.read(), None);
        let peers = [NodeName::from("n2"), NodeName::from("n3")];
        let fences = ["n4#7".to_string(), "n5@12#9".to_string()];
        assert!(file.touch(1234, &peers, &fences));
        let written = Membered { last_alive_ms: 1234, peers: Some(peers.to_vec()), fences: fences.to_vec() };
        assert_eq!(file.read(), Some(written.clone()));
        disk.crash();
        assert_eq!(file.read(), Some(written), "touch syncs before it renames");
        assert!(file.touch(1300, &[], &[]));
        assert_eq!(file.read(), Some(Membered { last_alive_ms: 1300, peers: Some(Vec::new()), fences: Vec::new() }));
        file.remove();
        assert_eq!(file.read(), None);
        assert!(!disk.exists(NAME) && !disk.exists(TMP));
    }

    #[test]
    fn a_v1_member_file_reads_with_its_peers_unknown() {
        let disk = Arc::new(ringkv_storage::MemDisk::new());
        let mut tmp = disk.create(NAME).unwrap();
        tmp.write_all(b"ringkv member file v1\nlast_alive_ms=99\n").unwrap();
        assert_eq!(MemberFile::new(disk).read(), Some(Membered { last_alive_ms: 99, peers: None, fences: Vec::new() }));
    }

    #[test]
    fn a_v2_member_file_reads_with_no_fences() {
        let disk = Arc::new(ringkv_storage::MemDisk::new());
        let mut tmp = disk.create(NAME).unwrap();
        tmp.write_all(b"ringkv member file v2\nlast_alive_ms=99\npeers=n2\n").unwrap();
        let read = MemberFile::new(disk).read();
        assert_eq!(read, Some(Membered { last_alive_ms: 99, peers: Some(vec!["n2".into()]), fences: Vec::new() }));
    }
}
