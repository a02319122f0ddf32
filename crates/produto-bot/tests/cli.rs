//! The `produto-bot` binary on its own, without a server: its help, and a setting it cannot
//! use. (The tests that run it against a real server are the server's: tests/api/bot.rs.)

use std::process::Command;

#[test]
fn help_lists_every_setting_and_exits_0() {
    let out = Command::new(env!("CARGO_BIN_EXE_produto-bot"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let help = String::from_utf8(out.stdout).unwrap();
    for env in [
        "PRODUTO_SERVER",
        "PRODUTO_BOT_TELEGRAM_TOKEN",
        "PRODUTO_LOG_FORMAT",
    ] {
        assert!(help.contains(env), "{env} missing from --help:\n{help}");
    }
}

#[test]
fn an_unusable_server_address_is_one_line_and_exit_1() {
    let out = Command::new(env!("CARGO_BIN_EXE_produto-bot"))
        .env("PRODUTO_SERVER", "not a url")
        .env_remove("PRODUTO_BOT_TELEGRAM_TOKEN")
        .env("PRODUTO_BOT_ADMIN_ADDR", "")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("produto-bot: "), "{stderr}");
}

#[test]
fn help_never_shows_a_secret_from_the_environment() {
    let secrets = [
        ("PRODUTO_ADMIN_TOKEN", "secret-admin-token-1"),
        ("PRODUTO_BOT_TELEGRAM_TOKEN", "123456:secret-telegram-2"),
        ("PRODUTO_BOT_WEBHOOK_SECRET", "secret-webhook-3"),
        ("PRODUTO_TOKEN", "secret-caller-token-4"),
    ];
    let out = Command::new(env!("CARGO_BIN_EXE_produto-bot"))
        .arg("--help")
        .envs(secrets)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let help = String::from_utf8(out.stdout).unwrap();
    for (env, value) in secrets {
        assert!(!help.contains(value), "--help shows {env}:\n{help}");
    }
}

#[test]
fn a_bad_setting_names_the_environment_variable_that_was_set() {
    let out = Command::new(env!("CARGO_BIN_EXE_produto-bot"))
        .env("PRODUTO_BOT_TIMEOUT", "abc")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("PRODUTO_BOT_TIMEOUT"), "{stderr}");
}

/// `python3` drives a pseudo-terminal; without it the test says SKIPPED (a failure under
/// CI, which installs it).
fn python3() -> bool {
    let ok = Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "python3 is missing under CI"
        );
        eprintln!("SKIPPED: python3 is not installed (it drives a pseudo-terminal)");
    }
    ok
}

/// A person who starts the bot at a terminal is told about /ajuda before typing anything.
#[test]
fn at_a_terminal_the_bot_greets_with_ajuda() {
    if !python3() {
        return;
    }
    let tty =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/python/terminal.py");
    let out = Command::new("python3")
        .arg(tty)
        .arg(r#"[["/ajuda", "/ajuda"], ["/logout", "\u0004"]]"#)
        .arg(env!("CARGO_BIN_EXE_produto-bot"))
        .env("PRODUTO_SERVER", "127.0.0.1:1")
        .env("PRODUTO_BOT_ADMIN_ADDR", "")
        .env_remove("PRODUTO_BOT_TELEGRAM_TOKEN")
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(shown.contains("/ajuda mostra a lista"), "{shown}");
    assert!(
        shown.contains("/usuarios"),
        "the /ajuda reply came: {shown}"
    );
}
