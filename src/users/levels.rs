//! A user's level (ObterNivel), with its one lookup query ([`NIVEL_SQL`]), and the batching
//! of those lookups on PostgreSQL: while a lookup query is in flight, the
//! lookups that arrive wait together and go out as one `WHERE usuario = ANY($1)` query, so a
//! crowd shares round trips. There is no timer: a lone caller runs the plain single query on
//! its own task and pays nothing. Switched by `PRODUTO_BATCH_NIVEL`; figures in docs/benchmarks.md.
//!
//! Exactness: a lookup only ever joins a query that has not been sent yet, so the query's
//! snapshot is taken after the lookup started, and a user committed before then is found.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
};

use futures_util::FutureExt;
use std::panic::AssertUnwindSafe;
use tokio::sync::oneshot;

use tracing::Instrument;

use crate::{
    Error,
    db::{Access, Backend, Db, Query, query::per_backend, traces},
    domain::Usuario,
};

/// The statements of this file, by name and shape (`db::Query`).
const NIVEL: Query = Query::select("nivel", "usuarios");
const NIVEL_BATCH: Query = Query::select("nivel_batch", "usuarios");

/// The one lookup of a user's level: a lone lookup, batched or not, runs this.
const NIVEL_SQL: &str = "SELECT nivel FROM usuarios WHERE usuario = $1";

/// The ObterNivel batchers: one per PostgreSQL server when `PRODUTO_BATCH_NIVEL` is on (so
/// a batch never mixes servers), none otherwise.
#[derive(Debug)]
pub struct Levels {
    /// By server index, as [`Db::servers`] numbers them.
    batchers: Vec<Option<Arc<NivelBatcher>>>,
}

impl Levels {
    pub fn new(db: &Db) -> Self {
        let lanes = db.nivel_batch();
        let batchers = db
            .servers()
            .all()
            .iter()
            .map(|server| match (&server.backend, lanes) {
                (Backend::Postgres(_), Some(lanes)) => Some(Arc::new(NivelBatcher::new(lanes))),
                _ => None,
            })
            .collect();
        Levels { batchers }
    }

    /// The batcher of server `server`, when its lookups are batched.
    pub fn batcher(&self, server: usize) -> Option<&Arc<NivelBatcher>> {
        self.batchers.get(server).and_then(Option::as_ref)
    }

    /// A user's level on server `server`: batched with concurrent lookups when that server
    /// has a batcher, one query of its own otherwise.
    pub async fn nivel(
        &self,
        db: &Db,
        server: usize,
        usuario: &Usuario,
    ) -> Result<Option<i32>, Error> {
        if let Some(batch) = self.batcher(server) {
            return batch.nivel(db, server, usuario).await;
        }
        let select = per_backend!(|conn| {
            sqlx::query_scalar(NIVEL_SQL)
                .bind(usuario.as_str())
                .persistent(db.named_statements())
                .fetch_optional(conn)
                .await
        });
        db.run_on(server, Access::Read, NIVEL, select).await
    }
}

/// Most names sent in one query; a larger crowd is served by the next query of the lane.
const MAX_BATCH: usize = 512;

/// The lookups waiting for a query, and how many lanes are sending one.
///
/// A lane is led by the caller that found it free, then by a spawned task while lookups keep
/// queueing; a leader cancelled mid-query hands its batch back (see [`Lane`]), so it takes
/// no one else's answer with it.
#[derive(Debug)]
pub struct NivelBatcher {
    state: Mutex<State>,
    /// Most queries in flight at once: each holds one pool connection, so this is also how
    /// much of the pool lookups may take while the rest is left to logins and inserts.
    lanes: usize,
}

#[derive(Debug, Default)]
struct State {
    pending: Vec<Waiter>,
    /// Lanes running now. Only changed under the lock, together with `pending`, so a lookup
    /// can never be left queued with no lane to take it.
    running: usize,
}

#[derive(Debug)]
struct Waiter {
    usuario: Usuario,
    reply: oneshot::Sender<Result<Option<i32>, Error>>,
    /// The caller's span, which the batch's span links to (None without traces).
    follows: Option<opentelemetry::trace::SpanContext>,
}

impl NivelBatcher {
    pub fn new(lanes: usize) -> Self {
        NivelBatcher {
            state: Mutex::default(),
            lanes: lanes.max(1),
        }
    }

    /// A user's level, looked up together with whatever other lookups are queued.
    ///
    /// With a lane free, the caller leads a query itself (a lone caller runs exactly one
    /// query, on its own task); with every lane busy, it queues for the next query.
    pub async fn nivel(
        self: &Arc<Self>,
        db: &Db,
        server: usize,
        usuario: &Usuario,
    ) -> Result<Option<i32>, Error> {
        let (reply, answer_rx) = oneshot::channel();
        let lead = {
            let mut state = self.lock();
            state.pending.push(Waiter {
                usuario: usuario.clone(),
                reply,
                follows: traces::follows(),
            });
            let lead = state.running < self.lanes;
            if lead {
                state.running += 1;
            }
            lead
        };
        if lead {
            let mut lane = Lane {
                batcher: self.clone(),
                db: db.clone(),
                server,
                batch: self.take_batch(),
            };
            // Another leader may have taken our lookup already: then there is nothing to send.
            if !lane.batch.is_empty() {
                let result = query_caught(db, server, &lane.batch).await;
                answer(std::mem::take(&mut lane.batch), result);
            }
            // Dropping the lane hands it on: to a spawned task if lookups queued meanwhile.
        }
        answer_rx
            .await
            .map_err(|_| Error::Internal("nivel batch lane ended without answering".into()))?
    }

    /// The oldest queued lookups, up to a batch: a lookup never waits behind later ones.
    fn take_batch(&self) -> Vec<Waiter> {
        take_live(&mut self.lock().pending)
    }

    /// A spawned lane: takes everything queued, sends it as one query, answers each caller,
    /// and repeats until nothing is queued. The lane is released under the same lock that
    /// finds the queue empty; a query that panics fails its batch and the lane goes on.
    async fn run_lane(self: Arc<Self>, db: Db, server: usize) {
        loop {
            let batch = {
                let mut state = self.lock();
                let batch = take_live(&mut state.pending);
                if batch.is_empty() {
                    state.running -= 1;
                    return;
                }
                batch
            };
            let result = query_caught(&db, server, &batch).await;
            answer(batch, result);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Nothing panics while holding the lock; should it, the state is still consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A lane led by a caller. When the caller is done, or is cancelled mid-query, the lane
/// passes on: the lookups it had not answered go back to the front of the queue (they will
/// be in a query sent later than they arrived, so exactness holds), and if anything is
/// queued a spawned task takes over the lane; otherwise the lane is released.
struct Lane {
    batcher: Arc<NivelBatcher>,
    db: Db,
    /// The server this batcher's queries go to.
    server: usize,
    batch: Vec<Waiter>,
}

impl Drop for Lane {
    fn drop(&mut self) {
        let unanswered = std::mem::take(&mut self.batch)
            .into_iter()
            .filter(|w| !w.reply.is_closed());
        let hand_on = {
            let mut state = self.batcher.lock();
            state.pending.splice(0..0, unanswered);
            if state.pending.is_empty() {
                state.running -= 1;
                false
            } else {
                true
            }
        };
        if hand_on {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    runtime.spawn(self.batcher.clone().run_lane(self.db.clone(), self.server));
                }
                // The runtime is going away: the queued callers go with it.
                Err(_) => self.batcher.lock().running -= 1,
            }
        }
    }
}

/// Takes the oldest queued lookups, up to a batch, leaving out the callers that have gone
/// (deadline, disconnect): nobody is waiting for their answer.
fn take_live(pending: &mut Vec<Waiter>) -> Vec<Waiter> {
    pending.retain(|w| !w.reply.is_closed());
    let take = pending.len().min(MAX_BATCH);
    pending.drain(..take).collect()
}

/// [`query`], with a panic turned into an error for the batch: a panic must neither take the
/// lane with it (`running` would never come down, and after `lanes` of them every lookup
/// would queue forever) nor leave the batch's callers without an answer.
async fn query_caught(
    db: &Db,
    server: usize,
    batch: &[Waiter],
) -> Result<HashMap<String, i32>, Error> {
    AssertUnwindSafe(query(db, server, batch))
        .catch_unwind()
        .await
        .unwrap_or_else(|_| Err(Error::Internal("nivel batch query panicked".into())))
}

/// The name whose lookup panics, in the crate's own tests only: the injected failure.
#[cfg(test)]
const PANIC_FOR: &str = "injected-panic";

/// The levels of the batch's users, by name (absent users are simply not in the map), from
/// server `server`: a read, retried once as every read is (see [`Db::run_on`]).
async fn query(db: &Db, server: usize, batch: &[Waiter]) -> Result<HashMap<String, i32>, Error> {
    #[cfg(test)]
    if batch.iter().any(|w| w.usuario.as_str() == PANIC_FOR) {
        panic!("injected failure in a nivel batch");
    }
    let query = if batch.len() == 1 { NIVEL } else { NIVEL_BATCH };
    let named = db.named_statements();
    let span = traces::batch_span(batch.len(), batch.iter().map(|w| w.follows.clone()));
    db.run_on(server, Access::Read, query, |conn| {
        Box::pin(async move { lookup(conn.postgres()?, batch, named).await })
    })
    .instrument(span)
    .await
}

/// One lookup query for the batch on `conn`.
async fn lookup(
    conn: &mut sqlx::PgConnection,
    batch: &[Waiter],
    named: bool,
) -> Result<HashMap<String, i32>, sqlx::Error> {
    if let [only] = batch {
        // A lone lookup runs the plain query: alone, it pays nothing for the batching.
        let nivel = sqlx::query_scalar::<_, i32>(NIVEL_SQL)
            .bind(only.usuario.as_str())
            .persistent(named)
            .fetch_optional(conn)
            .await?;
        Ok(nivel
            .map(|n| (only.usuario.as_str().to_owned(), n))
            .into_iter()
            .collect())
    } else {
        let names: Vec<&str> = batch.iter().map(|w| w.usuario.as_str()).collect();
        let rows = sqlx::query_as::<_, (String, i32)>(
            "SELECT usuario, nivel FROM usuarios WHERE usuario = ANY($1)",
        )
        .bind(names)
        .persistent(named)
        .fetch_all(conn)
        .await?;
        Ok(rows.into_iter().collect())
    }
}

/// Sends each caller its own answer. A failed query fails every caller of the batch with
/// the same code; the cause is logged once here.
fn answer(batch: Vec<Waiter>, result: Result<HashMap<String, i32>, Error>) {
    match result {
        Ok(levels) => {
            for waiter in batch {
                let nivel = levels.get(waiter.usuario.as_str()).copied();
                // A caller that gave up (deadline, disconnect) has dropped its receiver.
                let _ = waiter.reply.send(Ok(nivel));
            }
        }
        Err(e) => {
            let size = batch.len();
            tracing::warn!(error = %e, size, "nivel batch query failed");
            for waiter in batch {
                let copy = match &e {
                    Error::Unavailable(_) => Error::Unavailable(e.to_string()),
                    Error::DatabaseDown(_) => Error::DatabaseDown(e.to_string()),
                    _ => Error::Internal(e.to_string()),
                };
                let _ = waiter.reply.send(Err(copy));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::db::DbSettings;

    fn waiter(name: &str) -> (Waiter, oneshot::Receiver<Result<Option<i32>, Error>>) {
        let (reply, rx) = oneshot::channel();
        let usuario = Usuario::parse(name.into()).unwrap();
        let follows = None;
        (
            Waiter {
                usuario,
                reply,
                follows,
            },
            rx,
        )
    }

    #[test]
    fn callers_that_have_gone_are_not_carried_in_the_next_batch() {
        let batcher = NivelBatcher::new(1);
        let (gone, gone_rx) = waiter("gone");
        let (here, _here_rx) = waiter("here");
        batcher.lock().pending.extend([gone, here]);
        drop(gone_rx);
        let batch = batcher.take_batch();
        let names: Vec<&str> = batch.iter().map(|w| w.usuario.as_str()).collect();
        assert_eq!(names, ["here"]);
    }

    /// A fresh PostgreSQL database for one test (dropped at the end), with one user.
    struct PgDb {
        admin: String,
        name: String,
    }

    impl PgDb {
        async fn create() -> (PgDb, Db) {
            use sqlx::{Connection, Executor};
            let admin = std::env::var("PRODUTO_TEST_DATABASE_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
            let name = format!("produto_unit_batch_{}", std::process::id());
            let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
            conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .await
                .unwrap();
            let (base, _) = admin.rsplit_once('/').unwrap();
            let mut config = DbSettings::new(format!("{base}/{name}"));
            config.batch_nivel_lanes = 1;
            let db = Db::new(&config).unwrap();
            db.migrate().await.unwrap();
            let usuario = Usuario::parse("maria".into()).unwrap();
            let nivel = crate::domain::Nivel::parse(7).unwrap();
            crate::users::Users::new(db.clone())
                .insert_user(&usuario, "not-a-hash", nivel)
                .await
                .unwrap();
            (PgDb { admin, name }, db)
        }
    }

    /// The database is dropped even when the test fails.
    impl Drop for PgDb {
        fn drop(&mut self) {
            use sqlx::{Connection, Executor};
            let (admin, name) = (self.admin.clone(), self.name.clone());
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
                    let drop = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                    let _ = conn.execute(sqlx::AssertSqlSafe(drop)).await;
                });
            })
            .join();
        }
    }

    #[tokio::test]
    async fn a_panicking_batch_fails_its_callers_and_leaks_no_lane() {
        let (pg, db) = PgDb::create().await;
        let batcher = Levels::new(&db).batcher(0).unwrap().clone();
        let maria = Usuario::parse("maria".into()).unwrap();
        let poison = Usuario::parse(PANIC_FOR.into()).unwrap();

        // A panic in a lane led by its caller.
        let err = batcher.nivel(&db, 0, &poison).await.unwrap_err();
        assert!(matches!(err, Error::Internal(_)), "{err:?}");
        // A panic in a spawned lane: the poison lookup queued behind the only lane, which
        // then hands on to a spawned task.
        let (queued, rx) = waiter(PANIC_FOR);
        {
            let mut state = batcher.lock();
            state.pending.push(queued);
            state.running += 1;
        }
        drop(Lane {
            batcher: batcher.clone(),
            db: db.clone(),
            server: 0,
            batch: Vec::new(),
        });
        let answer = tokio::time::timeout(Duration::from_secs(10), rx)
            .await
            .expect("the queued caller is answered")
            .expect("with an error, not a dropped reply");
        assert!(matches!(answer, Err(Error::Internal(_))), "{answer:?}");

        // With one lane only, a leaked lane would leave this lookup queued forever.
        let nivel = tokio::time::timeout(Duration::from_secs(10), batcher.nivel(&db, 0, &maria))
            .await
            .expect("the lane is free again");
        assert_eq!(nivel.unwrap(), Some(7));
        assert_eq!(batcher.lock().running, 0);
        db.close(Duration::from_secs(5)).await;
        drop(pg);
    }
}
