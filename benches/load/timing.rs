//! Scenario 9: the login timing gap (issue 23). Unknown usernames against a known user's
//! wrong password, interleaved, one at a time, on the production server with its default
//! argon2 cost and throttling: the known user is guessed again and again (refused by the
//! throttle from the 6th guess on, as an attacker meets it), the unknown names are fresh.
//! Any gap whose 95 % interval excludes 0 would tell a stranger which names exist.

use std::time::Instant;

use produto::pb::{VerificarLoginRequest, produto_service_client::ProdutoServiceClient};
use produto_testkit::stats::Gap;
use tonic::transport::Channel;

use crate::calls;

/// The known user of this scenario: its own, so that throttling it touches no other scenario.
const KNOWN: &str = "timing-conhecido";

/// Runs `n` logins of each kind, alternating which goes first, after a warm-up; returns the
/// gap of unknown minus wrong password, in ms.
pub async fn login_gap(channel: &Channel, n: usize) -> Result<Gap, String> {
    let mut client = ProdutoServiceClient::new(channel.clone());
    let add = calls::add_user_request(KNOWN.into(), "senha-do-conhecido-1");
    match client.adicionar_usuario(add).await {
        Ok(_) => {}
        Err(s) if s.code() == tonic::Code::AlreadyExists => {}
        Err(s) => return Err(format!("creating {KNOWN}: {s}")),
    }
    let mut login = async |usuario: String| -> Result<f64, String> {
        let started = Instant::now();
        let answer = client
            .verificar_login(VerificarLoginRequest {
                usuario,
                senha: "senha-errada".into(),
            })
            .await
            .map_err(|s| format!("VerificarLogin: {s}"))?;
        if answer.get_ref().valido {
            return Err("a wrong password was accepted".into());
        }
        Ok(started.elapsed().as_secs_f64() * 1e3)
    };
    // Warm-up: connections, statement caches, the hashing threads' memory.
    for i in 0..10 {
        login(format!("aquecer-{i}")).await?;
    }
    let (mut unknown, mut wrong) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 0..n {
        if i % 2 == 0 {
            unknown.push(login(format!("ninguem-{i}")).await?);
            wrong.push(login(KNOWN.into()).await?);
        } else {
            wrong.push(login(KNOWN.into()).await?);
            unknown.push(login(format!("ninguem-{i}")).await?);
        }
    }
    Ok(Gap::of(&unknown, &wrong))
}
