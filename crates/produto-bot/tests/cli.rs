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
