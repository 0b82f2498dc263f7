//! Bounded mailboxes for ractor actors.
//!
//! ractor's mailboxes are unbounded, so admission is a semaphore: a message
//! takes a slot when sent and frees it when its handler returns, and a full
//! mailbox answers `Busy` at once instead of queueing without limit.

use std::sync::Arc;

use ractor::rpc::CallResult;
use ractor::{Actor, ActorRef, RpcReplyPort};
use ringkv_core::KvError;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::NodeError;
use crate::supervisor::Supervisor;

/// A message plus the mailbox slot it occupies until handled.
pub(crate) struct Envelope<M> {
    pub(crate) msg: M,
    _slot: OwnedSemaphorePermit,
}

pub(crate) struct Mailbox<M> {
    actor: ActorRef<Envelope<M>>,
    slots: Arc<Semaphore>,
    capacity: usize,
    name: Arc<str>,
}

impl<M> Clone for Mailbox<M> {
    fn clone(&self) -> Self {
        Mailbox {
            actor: self.actor.clone(),
            slots: self.slots.clone(),
            capacity: self.capacity,
            name: self.name.clone(),
        }
    }
}

impl<M: Send + 'static> Mailbox<M> {
    pub(crate) async fn spawn<A>(
        name: String,
        actor: A,
        args: A::Arguments,
        capacity: usize,
        supervisor: &Supervisor,
    ) -> Result<Mailbox<M>, NodeError>
    where
        A: Actor<Msg = Envelope<M>>,
    {
        // Unnamed in ractor's registry: it is process-wide, and several
        // nodes may share a process in tests and simulation.
        let (actor, _) = Actor::spawn_linked(None, actor, args, supervisor.cell())
            .await
            .map_err(|e| NodeError::Actor { name: name.clone(), reason: e.to_string() })?;
        supervisor.name(actor.get_id(), &name);
        Ok(Mailbox { actor, slots: Arc::new(Semaphore::new(capacity)), capacity, name: name.into() })
    }

    pub(crate) async fn call<T: Send + 'static>(&self, build: impl FnOnce(RpcReplyPort<T>) -> M) -> Result<T, KvError> {
        let slot = self
            .slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| KvError::Busy { what: self.name.to_string(), capacity: self.capacity })?;
        match self.actor.call(|reply| Envelope { msg: build(reply), _slot: slot }, None).await {
            Ok(CallResult::Success(value)) => Ok(value),
            Ok(CallResult::Timeout) => Err(KvError::Timeout { what: self.name.to_string(), ms: 0 }),
            Ok(CallResult::SenderError) | Err(_) => Err(KvError::Internal(format!("{} is not running", self.name))),
        }
    }

    pub(crate) fn stop(&self) {
        self.actor.stop(None);
    }
}
