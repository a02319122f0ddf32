//! The terminal transport: chat messages read from standard input, one per line, all from
//! one chat ([`STDIN_CHAT`]); each reply written to standard output followed by an empty
//! line, so that a script can tell where a reply ends. Blank input lines are skipped.

use tokio::io::{
    self, AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt,
    BufReader,
};

use crate::{Bot, ChatId, reply};

/// The chat every line of standard input belongs to.
pub const STDIN_CHAT: ChatId = ChatId(0);

/// Longest message read, in bytes (chat platforms cap theirs at a few KiB). A longer line
/// is skipped and answered with a short refusal, so one huge line cannot exhaust memory.
pub const MAX_MESSAGE_BYTES: usize = 4096;

/// Answers every line of `input` on `output` until the end of input; with `greet` (a person
/// at a terminal) it first writes [`reply::GREETING`], as a reply of its own.
pub async fn run<R, W>(bot: &Bot, greet: bool, input: R, mut output: W) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    if greet {
        output.write_all(reply::GREETING.as_bytes()).await?;
        output.write_all(b"\n\n").await?;
        output.flush().await?;
    }
    let mut input = BufReader::new(input);
    let mut line = Vec::with_capacity(256);
    while let Some(message) = read_message(&mut input, &mut line).await? {
        let reply = match message {
            Some(text) if text.trim().is_empty() => continue,
            Some(text) => bot.handle(STDIN_CHAT, &text).await,
            None => reply::TOO_LONG.into(),
        };
        output.write_all(reply.as_bytes()).await?;
        output.write_all(b"\n\n").await?;
        output.flush().await?;
    }
    Ok(())
}

/// Reads one line: `None` at the end of input, `Some(None)` for a line over the limit
/// (consumed up to its newline). Invalid UTF-8 is replaced, not fatal.
async fn read_message<R: AsyncBufRead + Unpin>(
    input: &mut R,
    line: &mut Vec<u8>,
) -> io::Result<Option<Option<String>>> {
    line.clear();
    let limit = MAX_MESSAGE_BYTES as u64 + 1;
    let n = (&mut *input).take(limit).read_until(b'\n', line).await?;
    if n == 0 {
        return Ok(None);
    }
    if line.last() != Some(&b'\n') && n as u64 == limit {
        skip_rest_of_line(input).await?;
        return Ok(Some(None));
    }
    let text = String::from_utf8_lossy(line);
    Ok(Some(Some(text.trim_end_matches(['\n', '\r']).to_owned())))
}

async fn skip_rest_of_line<R: AsyncBufRead + Unpin>(input: &mut R) -> io::Result<()> {
    loop {
        let chunk = input.fill_buf().await?;
        if chunk.is_empty() {
            return Ok(());
        }
        match chunk.iter().position(|&b| b == b'\n') {
            Some(at) => {
                input.consume(at + 1);
                return Ok(());
            }
            None => {
                let len = chunk.len();
                input.consume(len);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BotConfig;

    /// One reply per line, against a bot whose service is nowhere: the commands that need no
    /// service answer, `/logout` (the session is the service's) says the service is away.
    #[tokio::test]
    async fn every_line_gets_one_reply_and_blank_lines_none() {
        let bot = Bot::build(&BotConfig::for_server("http://127.0.0.1:1")).unwrap();
        let long = "x".repeat(MAX_MESSAGE_BYTES + 10);
        let mut input = format!("/ajuda\n\n   \r\nolá\r\n{long}\n/logout\n").into_bytes();
        input.extend_from_slice(b"\xff not utf-8\n/logout");
        let mut output = Vec::new();
        run(&bot, false, input.as_slice(), &mut output)
            .await
            .unwrap();

        let output = String::from_utf8(output).unwrap();
        let replies: Vec<&str> = output.split_terminator("\n\n").collect();
        assert_eq!(replies.len(), 6, "{output}");
        assert_eq!(replies[0], reply::HELP);
        assert!(replies[1].contains("/ajuda"));
        assert_eq!(replies[2], reply::TOO_LONG);
        assert_eq!(replies[3], reply::UNAVAILABLE);
        assert!(replies[4].contains("/ajuda"));
        assert_eq!(replies[5], reply::UNAVAILABLE);
        assert!(output.ends_with("\n\n"));
    }

    #[tokio::test]
    async fn a_person_at_a_terminal_is_greeted_with_ajuda_first() {
        let bot = Bot::build(&BotConfig::for_server("http://127.0.0.1:1")).unwrap();
        let mut output = Vec::new();
        run(&bot, true, b"/ajuda\n".as_slice(), &mut output)
            .await
            .unwrap();
        let output = String::from_utf8(output).unwrap();
        let replies: Vec<&str> = output.split_terminator("\n\n").collect();
        assert_eq!(replies, [reply::GREETING, reply::HELP], "{output}");
        assert!(reply::GREETING.contains("/ajuda"));
    }

    #[tokio::test]
    async fn a_line_of_exactly_the_limit_is_read() {
        let line = format!("/{}", "a".repeat(MAX_MESSAGE_BYTES - 1));
        let input = format!("{line}\n/logout\n");
        let mut reader = BufReader::new(input.as_bytes());
        let mut buf = Vec::new();
        assert_eq!(
            read_message(&mut reader, &mut buf).await.unwrap(),
            Some(Some(line))
        );
        assert_eq!(
            read_message(&mut reader, &mut buf).await.unwrap(),
            Some(Some("/logout".into()))
        );
        assert_eq!(read_message(&mut reader, &mut buf).await.unwrap(), None);
    }
}
