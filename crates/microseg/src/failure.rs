//! How a failed command ends: one line on stderr naming what and where, and an exit code
//! by the kind of failure, decided here and nowhere else.
//!
//! | code | kind |
//! |---|---|
//! | 1 | anything not below |
//! | 2 | usage: the command line is wrong (an unknown option, a value out of range) |
//! | 3 | bad input: a condition, a file, a value in the data that cannot be used |
//! | 4 | not found: a workspace, segment, profile, experiment or model that does not exist |
//! | 5 | store or I/O: the store or a file could not be read or written |

use microseg_store::StoreError;

/// A failure the binary itself names the kind of.
#[derive(Debug)]
pub struct Failure {
    kind: Kind,
    message: String,
}

/// The kinds of failure with an exit code of their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The command line is wrong.
    Usage,
    /// Input that cannot be used.
    BadInput,
    /// Something that does not exist.
    NotFound,
    /// The store or a file failed.
    Store,
}

impl Kind {
    /// The exit code.
    pub fn code(self) -> i32 {
        match self {
            Kind::Usage => 2,
            Kind::BadInput => 3,
            Kind::NotFound => 4,
            Kind::Store => 5,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

/// A wrong command line (exit 2).
pub fn usage(message: impl Into<String>) -> anyhow::Error {
    failure(Kind::Usage, message)
}

/// Input that cannot be used (exit 3).
pub fn bad_input(message: impl Into<String>) -> anyhow::Error {
    failure(Kind::BadInput, message)
}

/// Something that does not exist (exit 4).
pub fn not_found(message: impl Into<String>) -> anyhow::Error {
    failure(Kind::NotFound, message)
}

fn failure(kind: Kind, message: impl Into<String>) -> anyhow::Error {
    Failure {
        kind,
        message: message.into(),
    }
    .into()
}

/// The kind of a library error, when it has one.
fn kind_of(cause: &(dyn std::error::Error + 'static)) -> Option<Kind> {
    if let Some(f) = cause.downcast_ref::<Failure>() {
        return Some(f.kind);
    }
    if let Some(e) = cause.downcast_ref::<StoreError>() {
        return Some(match e {
            StoreError::NotAWorkspace(_)
            | StoreError::UnknownProfile(_)
            | StoreError::NotFound(_) => Kind::NotFound,
            StoreError::Io { .. } | StoreError::Sqlite(_) => Kind::Store,
            StoreError::Eval(microseg_engine::EvalError::UnknownSegment(_)) => Kind::NotFound,
            StoreError::Unreadable { .. }
            | StoreError::Config { .. }
            | StoreError::MissingColumn { .. }
            | StoreError::Invalid(_)
            | StoreError::Refused(_)
            | StoreError::Eval(_) => Kind::BadInput,
        });
    }
    if let Some(e) = cause.downcast_ref::<microseg_activate::run::RunError>() {
        return match e {
            microseg_activate::run::RunError::Store(e) => kind_of(e),
            microseg_activate::run::RunError::Send(
                microseg_activate::channels::SendError::Failed { .. },
            ) => Some(Kind::Store),
            _ => Some(Kind::BadInput),
        };
    }
    if let Some(e) = cause.downcast_ref::<microseg_console::ConsoleError>() {
        use microseg_console::ConsoleError as C;
        return match e {
            C::Store(e) => kind_of(e),
            C::Run(e) => kind_of(e),
            C::Eval(e) => kind_of(e),
            C::NotFound(_) => Some(Kind::NotFound),
            C::Personas(_) | C::Invalid(_) => Some(Kind::BadInput),
        };
    }
    if let Some(e) = cause.downcast_ref::<microseg_warehouse::WarehouseError>() {
        use microseg_warehouse::WarehouseError as W;
        return match e {
            W::Store(e) => kind_of(e),
            W::File { .. } => Some(Kind::Store),
            W::Condition(e) => kind_of(e),
            W::Config(_) | W::LeftOut(_) | W::UnknownIds { .. } => Some(Kind::BadInput),
            W::UnknownSegment(_) => Some(Kind::NotFound),
            // A segment's failure: the kind of what failed, further down the chain.
            W::Connect { .. } | W::Engine { .. } | W::NotLoaded { .. } | W::Segment { .. } => None,
        };
    }
    if let Some(e) = cause.downcast_ref::<microseg_engine::EvalError>() {
        return Some(match e {
            microseg_engine::EvalError::UnknownSegment(_) => Kind::NotFound,
            _ => Kind::BadInput,
        });
    }
    if cause.is::<microseg_core::condition::ParseError>()
        || cause.is::<microseg_activate::CampaignError>()
        || cause.is::<microseg_core::time::TimeError>()
        || cause.is::<microseg_engine::models::personas::PersonaError>()
        || cause.is::<microseg_engine::models::clv::ClvError>()
        || cause.is::<csv::Error>()
        || cause.is::<serde_json::Error>()
    {
        return Some(Kind::BadInput);
    }
    if cause.is::<std::io::Error>() {
        return Some(Kind::Store);
    }
    None
}

/// The exit code of `err`: the kind of the first cause in its chain that has one, else 1.
pub fn exit_code(err: &anyhow::Error) -> i32 {
    err.chain().find_map(kind_of).map_or(1, Kind::code)
}

/// `err` as one line: its causes joined, each said once.
pub fn one_line(err: &anyhow::Error) -> String {
    let mut message = err.to_string();
    for cause in err.chain().skip(1) {
        let cause = cause.to_string();
        if !message.contains(&cause) {
            message.push_str(": ");
            message.push_str(&cause);
        }
    }
    message.replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_map_to_their_codes_through_context() {
        use anyhow::Context as _;
        let wrapped = |e: anyhow::Error| Err::<(), _>(e).context("segment 'x'").unwrap_err();
        assert_eq!(exit_code(&wrapped(usage("--k 0"))), 2);
        let parse = microseg_core::condition::parse("age >").unwrap_err();
        assert_eq!(exit_code(&wrapped(parse.into())), 3);
        let missing = StoreError::NotAWorkspace("w".into());
        assert_eq!(exit_code(&wrapped(missing.into())), 4);
        let io = std::io::Error::other("disk full");
        assert_eq!(exit_code(&wrapped(io.into())), 5);
        assert_eq!(exit_code(&anyhow::anyhow!("something else")), 1);
    }
}
