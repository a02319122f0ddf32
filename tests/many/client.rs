//! The balancing client against real servers: it adds an instance that starts answering at
//! a listed address, drops one that stops, and resolves names to every address they have.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use produto::client::{BalancedClient, ClientSettings};
use tonic_health::pb::health_check_response::ServingStatus;

use produto_testkit::{Backend, TestDb, spawn_app, spawn_on};

async fn wait_for_addresses(client: &BalancedClient, want: &[SocketAddr]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = client.addresses();
        if now == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "addresses {now:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn serving(client: &BalancedClient) -> bool {
    client.health("").await.unwrap().into_inner().status == ServingStatus::Serving as i32
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_follows_instances_that_come_and_go() {
    let mut first = spawn_app(Backend::Sqlite).await;
    let later: SocketAddr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut settings = ClientSettings::new([first.addr.to_string(), later.to_string()]);
    settings.resolve_every = Duration::from_millis(100);
    let client = BalancedClient::connect(settings).await.unwrap();
    assert_eq!(
        client.addresses(),
        [first.addr],
        "nothing listens at {later} yet"
    );
    assert!(serving(&client).await);

    let second = spawn_on(later, TestDb::create(Backend::Sqlite).await).await;
    let mut both = vec![first.addr, second.addr];
    both.sort();
    wait_for_addresses(&client, &both).await;

    first.stop().await;
    wait_for_addresses(&client, &[second.addr]).await;
    for _ in 0..20 {
        assert!(serving(&client).await, "calls go to the instance left");
    }

    // A name resolves to every address it has (`localhost`: 127.0.0.1 and often ::1); the
    // server listens on 127.0.0.1 only, so only that address is kept.
    let mut settings = ClientSettings::new([format!("localhost:{}", second.addr.port())]);
    settings.resolve_every = Duration::from_millis(100);
    let by_name = BalancedClient::connect(settings).await.unwrap();
    assert_eq!(by_name.addresses(), [second.addr]);
    assert!(serving(&by_name).await);

    // Nothing answering at all is an error at connect, not a client that hangs later.
    let nobody = ClientSettings::new([first.addr.to_string()]);
    assert!(BalancedClient::connect(nobody).await.is_err());
}
