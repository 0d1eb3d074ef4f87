//! The confirmation that actions hard to undo ask for: a rollback, any forced gate, an
//! import that overwrites, a backfill started over.

use std::io::{BufRead, IsTerminal, Write};

use crate::outcome::{CommandResult, Failure};

/// Asks on the terminal whether to go on with `action` (which names the worker); `yes`
/// (`--yes`) answers for the operator. Without a terminal to ask and without `--yes`, it
/// refuses rather than guess: a script must say so.
pub fn confirm(action: &str, yes: bool) -> CommandResult {
    if yes {
        return Ok(());
    }
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(Failure::NotConfirmed(format!(
            "{action}: this needs confirmation and standard input is not a terminal; \
             pass --yes to go ahead"
        )));
    }
    // The question goes to standard error: standard output may be a file or a pipe.
    eprint!("{action}. Type yes to continue: ");
    std::io::stderr().flush().ok();
    let mut answer = String::new();
    stdin
        .lock()
        .read_line(&mut answer)
        .map_err(|e| Failure::NotConfirmed(format!("reading the answer: {e}")))?;
    if is_yes(&answer) {
        Ok(())
    } else {
        Err(Failure::NotConfirmed(
            "not confirmed: nothing was done".into(),
        ))
    }
}

fn is_yes(answer: &str) -> bool {
    answer.trim().eq_ignore_ascii_case("yes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_yes_confirms() {
        assert!(is_yes("yes\n"));
        assert!(is_yes(" YES "));
        for other in ["y\n", "no\n", "", "yes please\n"] {
            assert!(!is_yes(other), "{other:?}");
        }
    }

    #[test]
    fn yes_answers_without_asking() {
        assert!(confirm("roll back http://127.0.0.1:8787 to phase 0", true).is_ok());
    }
}
