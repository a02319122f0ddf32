//! Scenario 10: what traces cost the server. ObterNivel and VerificarLogin against servers
//! that differ only in their `OTEL_*` environment: no exporter ("off"), every trace sampled
//! ("100 %") and one in a hundred ("1 %"), exporting over OTLP/gRPC to a receiver in this
//! process that counts the spans; with `--baseline-bin`, a build without traces beside them
//! ("baseline"). The figure is the server's CPU per request, the variants played in ABBA
//! slices so that the machine's other load falls on each alike.

use std::time::Duration;

use tonic::transport::Channel;

use produto_testkit::otlp::Receiver;

use crate::{
    calls,
    report::{Row, Target},
    runner::{Call, abba_servers},
    server::Server,
};

/// How scenario 10 runs.
pub struct Plan<'a> {
    pub server_bin: &'a str,
    pub baseline_bin: Option<&'a str>,
    pub database_url: &'a str,
    pub connections: usize,
    pub nivel_callers: usize,
    pub login_callers: usize,
    pub rounds: u32,
    pub window: Duration,
}

/// A server to compare: its label, its binary, its environment.
type Variant<'a> = (&'static str, &'a str, Vec<(&'static str, String)>);

/// Runs the scenario, adding its rows, targets and notes.
pub async fn run(
    plan: Plan<'_>,
    rows: &mut Vec<Row>,
    targets: &mut Vec<Target>,
    notes: &mut Vec<(String, String)>,
) -> Result<(), String> {
    let receiver = Receiver::start(false).await;
    let endpoint = receiver.endpoint();
    let plain = ("PRODUTO_BATCH_NIVEL", "false".to_owned());
    // An empty endpoint is no endpoint: "off" stays off whatever the bench's environment says.
    let off = vec![
        plain.clone(),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", String::new()),
    ];
    let sampled = |sampler: &str, arg: &str| {
        vec![
            plain.clone(),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.clone()),
            ("OTEL_TRACES_SAMPLER", sampler.to_owned()),
            ("OTEL_TRACES_SAMPLER_ARG", arg.to_owned()),
        ]
    };
    let mut variants: Vec<Variant> = Vec::new();
    if let Some(bin) = plan.baseline_bin {
        variants.push(("baseline", bin, off.clone()));
    }
    variants.push(("off", plan.server_bin, off));
    variants.push((
        "100 %",
        plan.server_bin,
        sampled("parentbased_always_on", ""),
    ));
    variants.push((
        "1 %",
        plan.server_bin,
        sampled("parentbased_traceidratio", "0.01"),
    ));

    let mut servers = Vec::new();
    for (label, bin, env) in &variants {
        let server = Server::start(bin, label, plan.database_url, env).await?;
        let channels = server.channels(plan.connections).await?;
        servers.push((server, channels));
    }

    type Make = fn(&[Channel], usize) -> Call;
    let methods: [(&str, usize, Make); 2] = [
        (
            "10 ObterNivel traces",
            plan.nivel_callers,
            calls::grpc_nivel,
        ),
        (
            "10 VerificarLogin traces",
            plan.login_callers,
            calls::grpc_login,
        ),
    ];
    for (scenario, callers, make) in methods {
        let on: Vec<(u32, &[Channel])> = servers
            .iter()
            .map(|(server, channels)| (server.pid(), channels.as_slice()))
            .collect();
        let outcomes = abba_servers(&on, make, callers, plan.rounds, plan.window).await;
        let cpu = |label: &str| {
            variants
                .iter()
                .position(|(l, ..)| *l == label)
                .and_then(|i| outcomes[i].cpu_us_per_req())
        };
        for ((label, ..), o) in variants.iter().zip(&outcomes) {
            rows.push(Row::from_outcome(scenario, *label, o));
        }
        let method = scenario
            .trim_start_matches("10 ")
            .trim_end_matches(" traces");
        if let (Some(off), Some(one)) = (cpu("off"), cpu("1 %")) {
            targets.push(Target::at_most(
                format!("{method} server CPU/request, traces 1 % / off"),
                one / off,
                "x",
                1.05,
            ));
        }
        if let (Some(off), Some(all)) = (cpu("off"), cpu("100 %")) {
            notes.push((
                format!("{method} server CPU/request, traces 100 % / off"),
                format!("{:.3}x ({all:.1} / {off:.1} µs)", all / off),
            ));
        }
        if let (Some(base), Some(off)) = (cpu("baseline"), cpu("off")) {
            targets.push(Target::at_most(
                format!("{method} server CPU/request, traces off / baseline build"),
                off / base,
                "x",
                1.03,
            ));
        }
    }
    for (server, _) in servers {
        server.stop().await;
    }
    notes.push((
        "spans received by the bench's OTLP receiver".into(),
        format!("{} in {} exports", receiver.count(), receiver.exports()),
    ));
    Ok(())
}
