//! How a command fails, and the exit code each failure maps to.

use std::fmt;

/// Exit codes, stable for scripts:
///
/// | code | meaning |
/// |---|---|
/// | 0 | done |
/// | 1 | anything else (a bad file, an unexpected answer) |
/// | 2 | the command line is wrong (clap's own code) |
/// | 3 | refused or not finished: a gate blocks the move (409), a rollback is still under way, a verification found differences |
/// | 4 | the token is missing, invalid or not an admin's (401, 403) |
/// | 5 | the worker or a store failed (5xx) |
/// | 6 | the worker could not be reached |
/// | 7 | the request was rejected as invalid (400, 404, 405, 413) |
/// | 8 | not confirmed: the prompt was answered otherwise than `yes`, or standard input is not a terminal and `--yes` was not given |
/// | 9 | not ready: `ready` found a binding the worker cannot reach |
#[derive(Debug)]
pub enum Failure {
    Other(String),
    Refused(String),
    Unauthorized(String),
    Server(String),
    Unreachable(String),
    Invalid(String),
    NotConfirmed(String),
    NotReady(String),
}

impl Failure {
    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Other(_) => 1,
            Failure::Refused(_) => 3,
            Failure::Unauthorized(_) => 4,
            Failure::Server(_) => 5,
            Failure::Unreachable(_) => 6,
            Failure::Invalid(_) => 7,
            Failure::NotConfirmed(_) => 8,
            Failure::NotReady(_) => 9,
        }
    }

    /// The failure an HTTP status stands for, with the worker's error message.
    pub fn from_status(status: u16, message: String) -> Self {
        match status {
            401 | 403 => Failure::Unauthorized(message),
            409 => Failure::Refused(message),
            400..=499 => Failure::Invalid(message),
            500..=599 => Failure::Server(message),
            _ => Failure::Other(message),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (Failure::Other(m)
        | Failure::Refused(m)
        | Failure::Unauthorized(m)
        | Failure::Server(m)
        | Failure::Unreachable(m)
        | Failure::Invalid(m)
        | Failure::NotConfirmed(m)
        | Failure::NotReady(m)) = self;
        f.write_str(m)
    }
}

pub type CommandResult<T = ()> = Result<T, Failure>;
