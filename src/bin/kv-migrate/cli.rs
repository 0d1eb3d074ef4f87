//! The command line.

use std::path::PathBuf;

use clap::{Args as ClapArgs, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "kv-migrate",
    version,
    about = "Drive the OTP_AUTH_KV → CUSTOMER_KV migration through the worker's admin API",
    after_help = "Credentials never go on the command line: the admin token comes from --token-file, \
KV_MIGRATE_TOKEN, the profile's token_file or Access service token (--env), or is minted from \
ADMIN_JWT_SECRET, else JWT_SECRET (local use).\n\n\
Exit codes: 0 done, 1 other failure, 2 bad command line, 3 refused or not finished \
(gate, rollback under way, verification differences), 4 unauthorized, 5 worker or store failure, \
6 worker unreachable, 7 invalid request, 8 not confirmed (answered other than yes, or no terminal \
to ask and no --yes), 9 not ready (a binding the worker cannot reach)."
)]
pub struct Args {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, ClapArgs)]
pub struct Global {
    /// The worker's base URL [default: the profile's url, else http://127.0.0.1:8787].
    #[arg(long, global = true, env = "KV_MIGRATE_URL")]
    pub url: Option<String>,
    /// A file holding an admin JWT (not readable by group or others). KV_MIGRATE_TOKEN
    /// may hold the token itself; without either, the profile's token_file or Access
    /// service token, else a short-lived admin token minted from ADMIN_JWT_SECRET or
    /// JWT_SECRET.
    #[arg(
        long,
        global = true,
        env = "KV_MIGRATE_TOKEN_FILE",
        value_name = "PATH"
    )]
    pub token_file: Option<PathBuf>,
    /// The profile of this name in the config file ($KV_MIGRATE_CONFIG, else
    /// $XDG_CONFIG_HOME/kv-migrate/config.toml or ~/.config/kv-migrate/config.toml).
    #[arg(
        long = "env",
        global = true,
        env = "KV_MIGRATE_ENV",
        value_name = "NAME"
    )]
    pub profile: Option<String>,
    /// Answer yes to the confirmation that rollback, --force, import --overwrite,
    /// backfill reset, conflicts --settle, cohort, purge-new and finalize ask for (needed when
    /// standard input is not a terminal).
    #[arg(long, global = true)]
    pub yes: bool,
    /// Print the worker's answers as JSON (one document per line) instead of text.
    #[arg(long, global = true)]
    pub json: bool,
}

/// Steering the backfill (`POST /admin/migrate/backfill/…`).
#[derive(Debug, Clone, Copy, Subcommand)]
pub enum BackfillControl {
    /// Stop copying; fanned out, arriving chunks are set aside.
    Pause,
    /// Copy again; set-aside chunks are sent again.
    Resume,
    /// Start over (copies already made are skipped as in sync).
    Reset,
    /// Send again the chunks that reached the dead-letter queue.
    RetryFailed,
    /// Fanned out: at most N chunks of 100 keys queued and not yet done.
    Throttle {
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=100_000))]
        max_in_flight: u64,
    },
}

impl BackfillControl {
    /// The endpoint's last path segment.
    pub fn action(self) -> &'static str {
        match self {
            Self::Pause => "pause",
            Self::Resume => "resume",
            Self::Reset => "reset",
            Self::RetryFailed => "retry-failed",
            Self::Throttle { .. } => "throttle",
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Phase, gates, backfill and reverse-sync progress, verification, journal, audit.
    Status {
        /// Redraw until the backfill (or reverse sync) finishes.
        #[arg(long)]
        watch: bool,
        /// Seconds between redraws with --watch.
        #[arg(long, default_value_t = 2)]
        interval: u64,
    },
    /// Whether the worker reaches both namespaces and the coordinator (exit 9 if not).
    Ready,
    /// Move to phase N through the gates.
    Phase {
        #[arg(value_parser = clap::value_parser!(u8).range(0..=5))]
        phase: u8,
        #[command(flatten)]
        force: Force,
        /// First wait until the last move has settled (isolates all run it).
        #[arg(long)]
        wait: bool,
        /// Show the gates of the move and change nothing: exit 0 if it would be allowed,
        /// 3 if refused.
        #[arg(long, conflicts_with = "wait")]
        dry_run: bool,
    },
    /// Run backfill batches now (the cron also runs them in phase 3), or steer it.
    #[command(args_conflicts_with_subcommands = true)]
    Backfill {
        #[command(subcommand)]
        control: Option<BackfillControl>,
        /// Report what would be copied, write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Stop after scanning this many keys.
        #[arg(long)]
        max_records: Option<u64>,
        /// Keep running batches until the backfill is complete.
        #[arg(long)]
        until_done: bool,
    },
    /// Compare both stores key by key, until the verification is complete.
    Verify {
        /// Compare every key (the default).
        #[arg(long, conflicts_with = "sample")]
        full: bool,
        /// Compare about one key in N.
        #[arg(long, value_name = "N")]
        sample: Option<u64>,
    },
    /// Take the inventory of what CUSTOMER_KV holds before the migration (phase 0),
    /// until complete.
    Inventory {
        /// Take it afresh rather than continue or show the last one.
        #[arg(long)]
        restart: bool,
    },
    /// Audit and repair the email → customer mappings, until complete.
    Emails {
        #[arg(long)]
        dry_run: bool,
        /// List every email conflict and orphan the latest audit found, instead of
        /// auditing (the audit's report samples 20 of each).
        #[arg(long, conflicts_with = "dry_run")]
        issues: bool,
    },
    /// Roll back to phase N, syncing writes made since phase 4 back to the old store.
    Rollback {
        #[arg(value_parser = clap::value_parser!(u8).range(0..=5))]
        phase: u8,
        #[command(flatten)]
        force: Force,
        /// Take one round of steps and exit (3 if not done) instead of waiting.
        #[arg(long)]
        no_wait: bool,
        /// Show the steps the rollback would take and change nothing: exit 0 if it would
        /// go through, 3 if a gate would stop it.
        #[arg(long, conflicts_with = "no_wait")]
        dry_run: bool,
    },
    /// Move a share of the customers, or named ones, to the next (or previous) phase
    /// ahead of everyone; run again to widen; `phase N` to the cohort's completes it.
    Cohort {
        /// The cohort's phase: one step from the current one.
        #[arg(long, value_name = "PHASE", required_unless_present = "cancel")]
        to: Option<u8>,
        /// The share of customers, by a stable hash of their id (0-100, two decimals).
        #[arg(long, value_name = "PERCENT", conflicts_with = "cancel")]
        percent: Option<f64>,
        /// A customer in the cohort whatever its hash (repeatable, at most 100).
        #[arg(long = "customer", value_name = "ID", conflicts_with = "cancel")]
        customers: Vec<String>,
        /// Take the cohort's customers back to the phase everyone else is in.
        #[arg(long)]
        cancel: bool,
        #[command(flatten)]
        force: Force,
    },
    /// End the migration in phase 5: from then on nothing reads or writes OTP_AUTH_KV, and
    /// no phase move is possible.
    Finalize {
        /// Say what still stands in the way, and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Once finalized and settled: export the migration's working keys (CUSTOMER_KV's
        /// `__migration/`) to the --export file, then remove them; the phase record and
        /// the audit stay. With --dry-run, count them and remove nothing.
        #[arg(long, requires = "export", conflicts_with = "purge_tombstones")]
        purge_working_keys: bool,
        /// Once finalized and settled: remove CUSTOMER_KV's tombstones, each in its
        /// customer's object, writing each one removed to the --export file. With
        /// --dry-run, count them and remove nothing.
        #[arg(long, requires = "export")]
        purge_tombstones: bool,
        /// Where --purge-working-keys or --purge-tombstones writes what it removes
        /// (NDJSON, as `export`; `import` restores it).
        #[arg(long, value_name = "FILE")]
        export: Option<String>,
    },
    /// After a rollback to phase 0 that is final: remove from CUSTOMER_KV everything the
    /// migration wrote there, keeping what the inventory found before it.
    PurgeNew {
        /// Count what would be removed and kept, and remove nothing.
        #[arg(long)]
        dry_run: bool,
        /// Start over rather than continue the purge (or dry run) last begun.
        #[arg(long)]
        restart: bool,
        /// Without a usable inventory: vouch (with --reason) that CUSTOMER_KV held
        /// nothing of its own before the migration.
        #[command(flatten)]
        force: Force,
    },
    /// Write every key of a store as NDJSON to standard output.
    Export {
        #[arg(long, value_enum)]
        store: StoreArg,
        /// Only keys with this prefix.
        #[arg(long, default_value = "")]
        prefix: String,
        /// Keys outside the customer families too (audited).
        #[arg(long)]
        all_keys: bool,
    },
    /// Restore an NDJSON export into a store (keys it lacks, or all with --overwrite).
    Import {
        #[arg(long, value_enum)]
        store: StoreArg,
        /// Replace keys the store already holds.
        #[arg(long)]
        overwrite: bool,
        /// Restore keys outside the customer families too.
        #[arg(long)]
        all_keys: bool,
        /// The export file; `-` for standard input.
        file: String,
    },
    /// Conflicts the backfill left: both stores' values side by side.
    Conflicts {
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Every conflict, page after page.
        #[arg(long)]
        all: bool,
        /// Remove the entries whose stores agree now (settled through the API).
        #[arg(long, conflicts_with_all = ["limit", "all", "settle"])]
        prune: bool,
        /// Settle conflicts by this rule, in both stores: the keys given by `--key`, or
        /// every entry, a page at a time.
        #[arg(long, value_name = "RULE", conflicts_with_all = ["limit", "all"])]
        settle: Option<SettleRule>,
        /// A conflict's key to settle (repeat for more; at most 100).
        #[arg(long = "key", value_name = "KEY", requires = "settle")]
        keys: Vec<String>,
        /// Show what the rule would write, and write nothing.
        #[arg(long, requires = "settle")]
        dry_run: bool,
    },
    /// Admin actions, newest first.
    Audit {
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Every entry, page after page.
        #[arg(long)]
        all: bool,
    },
    /// Print a shell completion script: `source <(kv-migrate completions bash)`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print a short-lived JWT minted from JWT_SECRET (an admin's from ADMIN_JWT_SECRET
    /// when it is set).
    Token {
        #[arg(long, default_value = "admin")]
        role: String,
        #[arg(long, default_value = "ops-admin")]
        sub: String,
        /// Lifetime in minutes.
        #[arg(long, default_value_t = 15)]
        minutes: u64,
    },
}

#[derive(Debug, ClapArgs)]
pub struct Force {
    /// Override unmet gates (needs --reason; audited).
    #[arg(long, requires = "reason")]
    pub force: bool,
    /// Why the gates are overridden.
    #[arg(long)]
    pub reason: Option<String>,
}

/// How a conflict is settled (docs/design.md §6, "Settling").
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SettleRule {
    /// The old store's value, byte for byte.
    KeepOld,
    /// The new store's value, byte for byte.
    KeepNew,
    /// The record with the later `updatedAt`.
    Newer,
    /// The old record's fields, the new record's replacing them, stamped anew.
    Merge,
}

impl SettleRule {
    /// As the worker spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            SettleRule::KeepOld => "keep_old",
            SettleRule::KeepNew => "keep_new",
            SettleRule::Newer => "newer",
            SettleRule::Merge => "merge",
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum StoreArg {
    Old,
    New,
}

impl StoreArg {
    pub fn as_str(self) -> &'static str {
        match self {
            StoreArg::Old => "old",
            StoreArg::New => "new",
        }
    }
}
