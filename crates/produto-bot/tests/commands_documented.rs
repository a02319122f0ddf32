//! The bot's command lists agree: every command `/ajuda` lists is in docs/bot.md's table and
//! the other way round (the table may add `/ajuda`'s aliases, `/start` and `/help`), and every
//! command the README's section on the bot names is one the bot knows.

use std::collections::BTreeSet;

use produto_bot::reply::HELP;

/// The `/commands` at the start of `/ajuda`'s lines.
fn help_commands() -> BTreeSet<String> {
    HELP.lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|word| word.starts_with('/'))
        .map(str::to_owned)
        .collect()
}

/// Every `` `/command ...` `` in `text`, by its first word.
fn quoted_commands(text: &str) -> BTreeSet<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter(|quoted| quoted.starts_with('/') && quoted.len() > 1)
        .filter_map(|quoted| quoted.split_whitespace().next())
        .filter(|word| word[1..].chars().all(|c| c.is_alphabetic()))
        .map(str::to_owned)
        .collect()
}

fn read(path: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The rows of docs/bot.md's command table (the lines starting with ``| `/``).
fn documented_commands() -> BTreeSet<String> {
    let doc = read("../../docs/bot.md");
    let rows: String = doc
        .lines()
        .filter(|line| line.starts_with("| `/"))
        .map(|line| line.split('|').nth(1).unwrap_or(""))
        .collect::<Vec<_>>()
        .join(" ");
    quoted_commands(&rows)
}

#[test]
fn every_command_of_ajuda_is_in_the_bots_doc_and_the_other_way_round() {
    let help = help_commands();
    assert!(help.len() >= 10, "{help:?}");
    let documented = documented_commands();
    let missing: Vec<_> = help.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "in /ajuda, not in docs/bot.md: {missing:?}"
    );
    let aliases = BTreeSet::from(["/start".to_owned(), "/help".to_owned()]);
    let extra: Vec<_> = documented
        .difference(&help)
        .filter(|c| !aliases.contains(*c))
        .collect();
    assert!(extra.is_empty(), "in docs/bot.md, not in /ajuda: {extra:?}");
}

#[test]
fn every_command_the_readme_names_is_one_the_bot_knows() {
    let readme = read("../../README.md");
    // The bot's section (elsewhere `/metrics`, `/health`... are HTTP paths).
    let section = readme
        .split("\n## ")
        .find(|s| s.starts_with("The chat bot"))
        .expect("the README has a section on the chat bot");
    let named = quoted_commands(section);
    assert!(named.contains("/ajuda"), "the README points at /ajuda");
    let known = help_commands();
    let unknown: Vec<_> = named
        .iter()
        .filter(|c| !known.contains(*c) && !["/start", "/help"].contains(&c.as_str()))
        .collect();
    assert!(
        unknown.is_empty(),
        "the README names {unknown:?}, which /ajuda does not list"
    );
}
