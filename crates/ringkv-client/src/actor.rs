//! The client as a ractor actor: send it the store's operations as messages
//! with reply ports, from any other actor.
//!
//! ```no_run
//! # async fn example(client: ringkv_client::Client) -> Result<(), Box<dyn std::error::Error>> {
//! use ringkv_client::actor::{ClientMsg, spawn};
//! let store = spawn(client, 1024).await?;
//! ractor::call!(store, ClientMsg::Put, "k".into(), "v".into(), None)??;
//! let value = ractor::call!(store, ClientMsg::Get, "k".into())??;
//! # Ok(()) }
//! ```
//!
//! Each message is served on its own task, so one slow request does not
//! hold up the others; at most `max_in_flight` run at once and the rest are
//! answered `Busy`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SpawnErr};
use ringkv_core::{KeyTtl, KvError, KvStore};
use tokio::sync::Semaphore;

use crate::Client;

type Reply<T> = RpcReplyPort<Result<T, KvError>>;

pub enum ClientMsg {
    Put(Bytes, Bytes, Option<Duration>, Reply<()>),
    Get(Bytes, Reply<Option<Bytes>>),
    Delete(Bytes, Reply<bool>),
    Exists(Bytes, Reply<bool>),
    Ttl(Bytes, Reply<KeyTtl>),
    Expire(Bytes, Duration, Reply<bool>),
    Persist(Bytes, Reply<bool>),
    Clear(Reply<()>),
}

pub struct ClientActor;

pub struct ClientState {
    client: Client,
    slots: Arc<Semaphore>,
    max_in_flight: usize,
}

/// Spawns an (unnamed) client actor.
pub async fn spawn(client: Client, max_in_flight: usize) -> Result<ActorRef<ClientMsg>, SpawnErr> {
    let state = ClientState { client, slots: Arc::new(Semaphore::new(max_in_flight)), max_in_flight };
    let (actor, _) = Actor::spawn(None, ClientActor, state).await?;
    Ok(actor)
}

fn answer<T: Send + 'static>(reply: Reply<T>, result: Result<T, KvError>) {
    // The caller may have stopped waiting; nothing to do then.
    let _ = reply.send(result);
}

impl Actor for ClientActor {
    type Msg = ClientMsg;
    type State = ClientState;
    type Arguments = ClientState;

    async fn pre_start(
        &self,
        _myself: ActorRef<ClientMsg>,
        state: ClientState,
    ) -> Result<ClientState, ActorProcessingErr> {
        Ok(state)
    }

    async fn handle(
        &self,
        _myself: ActorRef<ClientMsg>,
        msg: ClientMsg,
        state: &mut ClientState,
    ) -> Result<(), ActorProcessingErr> {
        let Ok(slot) = state.slots.clone().try_acquire_owned() else {
            let busy = KvError::Busy { what: "the client actor".into(), capacity: state.max_in_flight };
            match msg {
                ClientMsg::Put(.., r) | ClientMsg::Clear(r) => answer(r, Err(busy)),
                ClientMsg::Get(_, r) => answer(r, Err(busy)),
                ClientMsg::Delete(_, r)
                | ClientMsg::Exists(_, r)
                | ClientMsg::Expire(_, _, r)
                | ClientMsg::Persist(_, r) => answer(r, Err(busy)),
                ClientMsg::Ttl(_, r) => answer(r, Err(busy)),
            }
            return Ok(());
        };
        let client = state.client.clone();
        tokio::spawn(async move {
            match msg {
                ClientMsg::Put(key, value, None, r) => answer(r, client.put(key, value).await),
                ClientMsg::Put(key, value, Some(ttl), r) => answer(r, client.put_with_ttl(key, value, ttl).await),
                ClientMsg::Get(key, r) => answer(r, client.get(key).await),
                ClientMsg::Delete(key, r) => answer(r, client.delete(key).await),
                ClientMsg::Exists(key, r) => answer(r, client.exists(key).await),
                ClientMsg::Ttl(key, r) => answer(r, client.ttl(key).await),
                ClientMsg::Expire(key, ttl, r) => answer(r, client.expire(key, ttl).await),
                ClientMsg::Persist(key, r) => answer(r, client.persist(key).await),
                ClientMsg::Clear(r) => answer(r, client.clear().await),
            }
            drop(slot);
        });
        Ok(())
    }
}
