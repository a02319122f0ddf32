//! The calls each scenario makes: ObterNivel over gRPC, the same query straight through a
//! sqlx pool or over a new connection per request, VerificarLogin, AdicionarUsuario, and the
//! raw argon2 verify that bounds logins.

use std::{
    sync::atomic::{AtomicU64, Ordering::Relaxed},
    time::{Duration, Instant},
};

use argon2::{Algorithm, Argon2, Params, PasswordHash, PasswordVerifier, Version};
use produto::pb::{
    AbrirSessaoRequest, AdicionarUsuarioRequest, ObterNivelRequest, ObterSessaoRequest,
    VerificarLoginRequest, produto_service_client::ProdutoServiceClient,
};
use sqlx::{Connection, PgConnection, PgPool};
use tonic::{Request, metadata::MetadataMap, transport::Channel};

use crate::{
    runner::{Call, XorShift, histogram},
    server::ADMIN_TOKEN,
};

/// Users seeded in the table: `user0` … `user{USERS - 1}` (set by the seeding).
pub static USERS: AtomicU64 = AtomicU64::new(10_000);
/// Every seeded user's password.
pub const PASSWORD: &str = "senha-bench-1";
/// The statement ObterNivel runs, issued by the bench itself in scenarios 2 and 3.
pub const NIVEL_SQL: &str = "SELECT nivel FROM usuarios WHERE usuario = $1";

/// An AdicionarUsuario request for `usuario` at level 1, with the bench servers' admin token.
pub fn add_user_request(usuario: String, senha: &str) -> Request<AdicionarUsuarioRequest> {
    let mut request = Request::new(AdicionarUsuarioRequest {
        usuario,
        senha: senha.into(),
        nivel: 1,
    });
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {ADMIN_TOKEN}")
            .parse()
            .expect("ascii token"),
    );
    request
}

fn user(rng: &mut XorShift) -> String {
    format!("user{}", rng.below(USERS.load(Relaxed).max(1)))
}

fn code(status: &tonic::Status) -> String {
    format!("{:?}", status.code())
}

fn sqlx_code(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(db) => format!("sqlx:{}", db.code().unwrap_or_default()),
        other => format!(
            "sqlx:{}",
            other.to_string().chars().take(40).collect::<String>()
        ),
    }
}

/// Caller `i` of ObterNivel over gRPC, on connection `i % channels.len()`.
pub fn grpc_nivel(channels: &[Channel], i: usize) -> Call {
    let mut rng = XorShift::new(i as u64 + 1);
    nivel_of(channels, i, move || user(&mut rng))
}

/// Caller `i` of ObterNivel, always of `usuario`.
pub fn grpc_nivel_of(channels: &[Channel], i: usize, usuario: &str) -> Call {
    let usuario = usuario.to_owned();
    nivel_of(channels, i, move || usuario.clone())
}

/// Caller `i` of ObterNivel, each call of the user `pick` names.
fn nivel_of(
    channels: &[Channel],
    i: usize,
    mut pick: impl FnMut() -> String + Send + 'static,
) -> Call {
    let client = ProdutoServiceClient::new(channels[i % channels.len()].clone());
    Box::new(move || {
        let mut client = client.clone();
        let usuario = pick();
        Box::pin(async move {
            match client.obter_nivel(ObterNivelRequest { usuario }).await {
                Ok(_) => Ok(()),
                Err(s) => Err(code(&s)),
            }
        })
    })
}

/// Caller `i` of ObterSessao, naming its session with `metadata` (a token, or a caller token
/// and an end user).
pub fn grpc_sessao(channels: &[Channel], i: usize, metadata: MetadataMap) -> Call {
    let client = ProdutoServiceClient::new(channels[i % channels.len()].clone());
    Box::new(move || {
        let mut client = client.clone();
        let mut request = Request::new(ObterSessaoRequest {});
        *request.metadata_mut() = metadata.clone();
        Box::pin(async move {
            match client.obter_sessao(request).await {
                Ok(_) => Ok(()),
                Err(s) => Err(code(&s)),
            }
        })
    })
}

/// AbrirSessao for `usuario` with the seeded password and `metadata`: the session's token.
pub async fn abrir_sessao(
    channel: &Channel,
    usuario: String,
    metadata: MetadataMap,
) -> Result<String, String> {
    let mut request = Request::new(AbrirSessaoRequest {
        usuario,
        senha: PASSWORD.into(),
    });
    *request.metadata_mut() = metadata;
    match ProdutoServiceClient::new(channel.clone())
        .abrir_sessao(request)
        .await
    {
        Ok(r) if r.get_ref().valido => Ok(r.into_inner().token),
        Ok(_) => Err("valido=false".into()),
        Err(s) => Err(code(&s)),
    }
}

/// Caller `i` of AbrirSessao, each login of the user `pick` names.
pub fn grpc_abrir_sessao(
    channels: &[Channel],
    i: usize,
    mut pick: impl FnMut() -> String + Send + 'static,
) -> Call {
    let channel = channels[i % channels.len()].clone();
    Box::new(move || {
        let channel = channel.clone();
        let usuario = pick();
        Box::pin(async move {
            abrir_sessao(&channel, usuario, MetadataMap::new())
                .await
                .map(|_| ())
        })
    })
}

/// Caller `i` of grpc.health.v1.Health/Check for the whole server (service "").
pub fn grpc_check(channels: &[Channel], i: usize) -> Call {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let client = HealthClient::new(channels[i % channels.len()].clone());
    Box::new(move || {
        let mut client = client.clone();
        Box::pin(async move {
            match client
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
            {
                Ok(_) => Ok(()),
                Err(s) => Err(code(&s)),
            }
        })
    })
}

/// Caller `i` of the same query through the bench's own pool (no gRPC).
pub fn pool_nivel(pool: &PgPool, i: usize) -> Call {
    let pool = pool.clone();
    let mut rng = XorShift::new(i as u64 + 1);
    Box::new(move || {
        let pool = pool.clone();
        let usuario = user(&mut rng);
        Box::pin(async move {
            sqlx::query_scalar::<_, i32>(NIVEL_SQL)
                .bind(usuario)
                .fetch_optional(&pool)
                .await
                .map(|_| ())
                .map_err(|e| sqlx_code(&e))
        })
    })
}

/// Caller `i` of the same query over a new connection per request: the old bot's way.
pub fn newconn_nivel(url: &str, i: usize) -> Call {
    let url = url.to_string();
    let mut rng = XorShift::new(i as u64 + 1);
    Box::new(move || {
        let url = url.clone();
        let usuario = user(&mut rng);
        Box::pin(async move {
            let mut conn = PgConnection::connect(&url)
                .await
                .map_err(|e| sqlx_code(&e))?;
            sqlx::query_scalar::<_, i32>(NIVEL_SQL)
                .bind(usuario)
                .fetch_optional(&mut conn)
                .await
                .map_err(|e| sqlx_code(&e))?;
            conn.close().await.map_err(|e| sqlx_code(&e))
        })
    })
}

/// Caller `i` of VerificarLogin with a correct password.
pub fn grpc_login(channels: &[Channel], i: usize) -> Call {
    let client = ProdutoServiceClient::new(channels[i % channels.len()].clone());
    let mut rng = XorShift::new(i as u64 + 7);
    Box::new(move || {
        let mut client = client.clone();
        let usuario = user(&mut rng);
        Box::pin(async move {
            let request = VerificarLoginRequest {
                usuario,
                senha: PASSWORD.into(),
            };
            match client.verificar_login(request).await {
                Ok(r) if r.get_ref().valido => Ok(()),
                Ok(_) => Err("valido=false".into()),
                Err(s) => Err(code(&s)),
            }
        })
    })
}

/// Caller `i` of AdicionarUsuario, each call a new name.
pub fn grpc_add(channels: &[Channel], i: usize) -> Call {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let client = ProdutoServiceClient::new(channels[i % channels.len()].clone());
    Box::new(move || {
        let mut client = client.clone();
        let n = NEXT.fetch_add(1, Relaxed);
        Box::pin(async move {
            let request = add_user_request(format!("added{n}"), PASSWORD);
            match client.adicionar_usuario(request).await {
                Ok(_) => Ok(()),
                Err(s) => Err(code(&s)),
            }
        })
    })
}

/// The argon2id instance with the server's default (OWASP) parameters.
pub fn argon2() -> Argon2<'static> {
    let params = Params::new(19456, 2, 1, None).expect("valid argon2 parameters");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// The server runs its hashing threads at nice 10; the raw threads run there too, so that on
/// a shared machine both meet the other processes' load on equal terms.
const HASH_THREAD_NICE: libc::c_int = 10;

/// Raw verify rate: `threads` OS threads verifying `hash` back to back for `warmup + window`.
/// Returns (verifies in the window, latency histogram in µs).
pub fn raw_argon2_verify(
    hash: &str,
    threads: usize,
    warmup: Duration,
    window: Duration,
) -> (u64, hdrhistogram::Histogram<u64>) {
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + window;
    let argon2 = argon2();
    let parsed = PasswordHash::new(hash).expect("a PHC string");
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    // SAFETY: no memory effects; on Linux it applies to this thread only.
                    unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, HASH_THREAD_NICE) };
                    let mut latency = histogram();
                    let mut count = 0;
                    loop {
                        let began = Instant::now();
                        if began >= end {
                            break;
                        }
                        let ok = argon2.verify_password(PASSWORD.as_bytes(), &parsed).is_ok();
                        assert!(ok, "the seeded hash verifies its password");
                        let done = Instant::now();
                        if began >= measure_from && done <= end {
                            count += 1;
                            latency.saturating_record(
                                u64::try_from(done.duration_since(began).as_micros())
                                    .unwrap_or(u64::MAX),
                            );
                        }
                    }
                    (count, latency)
                })
            })
            .collect();
        let mut total = 0;
        let mut merged = histogram();
        for w in workers {
            let (count, latency) = w.join().expect("argon2 worker");
            total += count;
            merged.add(&latency).expect("same bounds");
        }
        (total, merged)
    })
}
