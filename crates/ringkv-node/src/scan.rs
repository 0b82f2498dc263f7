//! Scans of the whole cluster's keys (`SCAN`, `KEYS`, `DBSIZE`,
//! `RANDOMKEY`): pages of each partition from a read quorum of its
//! replicas, merged by `ringkv_core::scan`, which also defines the cursor
//! and why it survives membership changes.

use bytes::Bytes;
use futures_util::stream::FuturesUnordered;
use ringkv_core::scan::{Cursor, Merged, Page, merge};
use ringkv_core::{Consistency, KvError, PartitionId};
use ringkv_net::wire::{ReplicaRequest, Reply};

use crate::coordinate::{Gather, plan_read};
use crate::node::Node;
use crate::ops::{Until, fan_out, no_action};

/// The most partition pages one call reads, so that a call over an empty
/// or sparse stretch of partitions answers in bounded time (with fewer
/// keys than asked, as Redis's `SCAN` may) instead of walking them all.
/// As many as the default partition count: a small keyspace is walked in
/// one call, as Redis walks a small dict.
const MAX_PAGES_PER_CALL: usize = 256;

impl Node {
    /// Live keys from `from` on, at least `count` of them unless the walk
    /// ends or a call's page budget runs out first, and where the next call
    /// resumes (`None`: the walk is done).
    pub(crate) async fn scan(&self, from: Cursor, count: usize) -> Result<(Option<Cursor>, Vec<Bytes>), KvError> {
        let partitions = self.inner.partitioner.count();
        if from.partition.0 >= partitions {
            return Err(KvError::Protocol(format!("scan cursor names partition {}", from.partition)));
        }
        let mut keys = Vec::new();
        let mut next = Some(from);
        for _ in 0..MAX_PAGES_PER_CALL {
            let Some(at) = next.filter(|_| keys.len() < count) else { break };
            let limit = (count - keys.len()).clamp(8, ringkv_core::scan::MAX_PAGE_KEYS);
            let Merged { live, resume } = self.scan_page(at.partition, at.from, limit).await?;
            keys.extend(live);
            next = match resume {
                Some(from) => Some(Cursor { partition: at.partition, from }),
                None => Cursor::after(at.partition, partitions),
            };
        }
        Ok((next, keys))
    }

    /// One page of a partition, from the first read quorum of its replicas
    /// to answer, as a read at consistency `quorum` would ask them.
    async fn scan_page(&self, partition: PartitionId, from: u64, limit: usize) -> Result<Merged, KvError> {
        let topo = self.inner.topology();
        let up = plan_read("scan", &topo, partition, Consistency::Quorum, self.inner.config.read_quorum)?;
        let request = ReplicaRequest::Keys { partition: partition.0, from, limit: limit as u32 };
        let mut calls: FuturesUnordered<_> = up
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let (topo, request) = (&topo, request.clone());
                async move { (i, self.on_replica(topo, name, request).await) }
            })
            .collect();
        let needed = Consistency::Quorum.required(up.len(), self.inner.config.read_quorum).max(1);
        let mut round = Gather::new("scan", up.clone(), needed, |reply| match reply {
            Reply::Keys { keys, full } => Ok(Page { keys, full }),
            other => Err(other),
        });
        fan_out(&mut calls, &mut round, no_action, Until::Decided).await;
        round.outcome()?;
        let pages = round.into_answers().collect();
        Ok(merge(pages))
    }
}
