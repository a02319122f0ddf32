//! The floors: bare tonic servers from the same generated code (`produto::pb`) and the same
//! runtime and HTTP/2 settings as produto-server, run as child processes of this bench
//! (`--serve-floor`) so that their CPU is read from /proc like produto's. `constant` answers
//! ObterNivel from a constant; `sqlx` runs produto's SQL through a plain PgPool of the same
//! size. Both answer Health/Check through tonic-health. Nothing else: no middleware, no
//! metrics, no logging. What produto costs above them is what its own layers cost.

use std::net::SocketAddr;

use produto::{
    config::Limits,
    pb::{
        self as pb, AdicionarUsuarioRequest, AdicionarUsuarioResponse, ObterNivelRequest,
        ObterNivelResponse, VerificarLoginRequest, VerificarLoginResponse,
        produto_service_server::{ProdutoService, ProdutoServiceServer},
    },
};
use sqlx::{PgPool, postgres::PgPoolOptions};
use tonic::{Request, Response, Status};

/// Which floor to serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Floor {
    /// ObterNivel answers a constant.
    Constant,
    /// ObterNivel runs produto's SQL on a plain sqlx PgPool.
    Sqlx,
}

impl Floor {
    pub fn arg(self) -> &'static str {
        match self {
            Floor::Constant => "constant",
            Floor::Sqlx => "sqlx",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Floor::Constant => "floor-constant",
            Floor::Sqlx => "floor-sqlx",
        }
    }
}

/// The statement produto's ObterNivel runs (src/users/levels.rs).
const NIVEL_SQL: &str = "SELECT nivel FROM usuarios WHERE usuario = $1";

struct FloorService {
    pool: Option<PgPool>,
}

#[tonic::async_trait]
impl ProdutoService for FloorService {
    async fn obter_nivel(
        &self,
        request: Request<ObterNivelRequest>,
    ) -> Result<Response<ObterNivelResponse>, Status> {
        let Some(pool) = &self.pool else {
            return Ok(Response::new(ObterNivelResponse { nivel: 1 }));
        };
        match sqlx::query_scalar::<_, i32>(NIVEL_SQL)
            .bind(request.into_inner().usuario)
            .fetch_optional(pool)
            .await
        {
            Ok(Some(nivel)) => Ok(Response::new(ObterNivelResponse { nivel })),
            Ok(None) => Err(Status::not_found("no such user")),
            Err(e) => Err(Status::unavailable(e.to_string())),
        }
    }

    async fn verificar_login(
        &self,
        _: Request<VerificarLoginRequest>,
    ) -> Result<Response<VerificarLoginResponse>, Status> {
        Err(Status::unimplemented("floor: ObterNivel and Health only"))
    }

    async fn adicionar_usuario(
        &self,
        _: Request<AdicionarUsuarioRequest>,
    ) -> Result<Response<AdicionarUsuarioResponse>, Status> {
        Err(Status::unimplemented("floor: ObterNivel and Health only"))
    }

    async fn alterar_senha(
        &self,
        _: Request<pb::AlterarSenhaRequest>,
    ) -> Result<Response<pb::AlterarSenhaResponse>, Status> {
        Err(Status::unimplemented("floor: ObterNivel and Health only"))
    }

    async fn alterar_nivel(
        &self,
        _: Request<pb::AlterarNivelRequest>,
    ) -> Result<Response<pb::AlterarNivelResponse>, Status> {
        Err(Status::unimplemented("floor: ObterNivel and Health only"))
    }

    async fn remover_usuario(
        &self,
        _: Request<pb::RemoverUsuarioRequest>,
    ) -> Result<Response<pb::RemoverUsuarioResponse>, Status> {
        Err(Status::unimplemented("floor: ObterNivel and Health only"))
    }

    async fn listar_usuarios(
        &self,
        _: Request<pb::ListarUsuariosRequest>,
    ) -> Result<Response<pb::ListarUsuariosResponse>, Status> {
        Err(Status::unimplemented("floor: ObterNivel and Health only"))
    }
    async fn abrir_sessao(
        &self,
        _: Request<pb::AbrirSessaoRequest>,
    ) -> Result<Response<pb::AbrirSessaoResponse>, Status> {
        Err(Status::unimplemented("floor: ObterNivel and Health only"))
    }

    async fn obter_sessao(
        &self,
        _: Request<pb::ObterSessaoRequest>,
    ) -> Result<Response<pb::ObterSessaoResponse>, Status> {
        Err(Status::unimplemented("floor: ObterNivel and Health only"))
    }

    async fn encerrar_sessao(
        &self,
        _: Request<pb::EncerrarSessaoRequest>,
    ) -> Result<Response<pb::EncerrarSessaoResponse>, Status> {
        Err(Status::unimplemented("floor: ObterNivel and Health only"))
    }

    async fn listar_sessoes(
        &self,
        _: Request<pb::ListarSessoesRequest>,
    ) -> Result<Response<pb::ListarSessoesResponse>, Status> {
        Err(Status::unimplemented("floor: ObterNivel and Health only"))
    }

    async fn encerrar_sessoes(
        &self,
        _: Request<pb::EncerrarSessoesRequest>,
    ) -> Result<Response<pb::EncerrarSessoesResponse>, Status> {
        Err(Status::unimplemented("floor: ObterNivel and Health only"))
    }

    async fn listar_auditoria(
        &self,
        _: Request<pb::ListarAuditoriaRequest>,
    ) -> Result<Response<pb::ListarAuditoriaResponse>, Status> {
        Err(Status::unimplemented("floor: ObterNivel and Health only"))
    }
}

/// Serves `floor` on `addr` until killed. The runtime is `#[tokio::main]`'s, as in
/// src/main.rs; the builder and its settings are src/app.rs's ([`produto::app::server_builder`]
/// over the default limits).
pub fn serve(
    floor: Floor,
    addr: SocketAddr,
    database_url: &str,
    pool_size: u32,
) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    runtime.block_on(async {
        let pool = match floor {
            Floor::Constant => None,
            Floor::Sqlx => Some(
                PgPoolOptions::new()
                    .max_connections(pool_size)
                    .min_connections(1)
                    .connect(database_url)
                    .await
                    .map_err(|e| format!("floor pool: {e}"))?,
            ),
        };
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("bind {addr}: {e}"))?;
        let incoming = produto::app::incoming(listener);
        let (_reporter, health) = tonic_health::server::health_reporter();
        produto::app::server_builder(&Limits::default())
            .add_service(health)
            .add_service(
                ProdutoServiceServer::new(FloorService { pool })
                    .max_decoding_message_size(produto::app::MAX_REQUEST_BYTES),
            )
            .serve_with_incoming(incoming)
            .await
            .map_err(|e| format!("floor server: {e}"))
    })
}
