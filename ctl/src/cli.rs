//! The command line: clap definitions only.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// voiydctl: manage a voiyd cluster.
#[derive(Debug, Parser)]
#[command(name = "voiydctl", version, about = "Manage a voiyd cluster", long_about = None)]
pub struct Cli {
    /// Config file [default: ~/.voiyd/voiydctl.yaml].
    #[arg(
        short = 'c',
        long = "config",
        env = "VOIYD_CONFIG",
        global = true,
        value_name = "FILE"
    )]
    pub config: Option<PathBuf>,
    /// NATS URL(s) of the cluster, comma-separated; overrides the config's current server.
    #[arg(long, env = "VOIYD_SERVER", global = true, value_name = "URL")]
    pub server: Option<String>,
    /// How long an API call waits for its reply [default: 10s]; for commands that wait
    /// for a state (run, start, stop, delete task), how long to wait for it [default: 2m].
    #[arg(long, value_name = "DURATION", global = true)]
    pub timeout: Option<String>,
    /// Print more about what voiydctl does, on stderr (give it before the command).
    #[arg(short, long)]
    pub verbose: bool,
    /// How -v writes: text, or JSON lines.
    #[arg(long, value_enum, global = true, default_value_t = voiyd_telemetry::LogFormat::Text)]
    pub log_format: voiyd_telemetry::LogFormat,
    /// Export this command's trace to an OTLP/HTTP collector (e.g. http://127.0.0.1:4318).
    #[arg(
        long,
        env = "OTEL_EXPORTER_OTLP_ENDPOINT",
        global = true,
        value_name = "URL"
    )]
    pub otlp_endpoint: Option<String>,
    /// No colours, even on a terminal (also when NO_COLOR is set).
    #[arg(long, global = true)]
    pub no_color: bool,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Output formats of `get`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned columns.
    Table,
    /// More columns.
    Wide,
    /// protobuf JSON: one object, or an array for lists.
    Json,
    /// YAML documents separated by `---`.
    Yaml,
    /// `kind/name` lines.
    Name,
}

/// Output formats of `events`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EventOutput {
    /// Aligned columns.
    Table,
    /// One JSON object a line.
    Json,
}

/// Restart policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Restart {
    /// Restart whenever the container exits.
    Always,
    /// Restart when it exits non-zero.
    OnFailure,
    /// Never restart.
    Never,
}

impl Restart {
    /// The policy as TaskConfig spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Restart::Always => "always",
            Restart::OnFailure => "on-failure",
            Restart::Never => "never",
        }
    }
}

/// Shells `completion` generates scripts for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    /// bash
    Bash,
    /// zsh
    Zsh,
    /// fish
    Fish,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create or update resources from manifests.
    Apply(ApplyArgs),
    /// Show field by field what `apply -f` would change (exit 0: nothing, 1: changes).
    Diff(DiffArgs),
    /// Create resources from manifests (-f), or a volume: `create volume host-local NAME`,
    /// `create volume template NAME FILE`; fails if one exists.
    Create(CreateArgs),
    /// Show resources: tasks, nodes, volumes, sets, leases, events.
    Get(GetArgs),
    /// Delete resources by name or from manifests.
    Delete(DeleteArgs),
    /// Edit a resource in $VISUAL / $EDITOR and update it.
    Edit(EditArgs),
    /// Show cluster events; -w follows them.
    Events(EventsArgs),
    /// Create a task and wait until it runs.
    Run(Box<RunArgs>),
    /// Start stopped tasks and wait until they run.
    Start(ActionArgs),
    /// Stop tasks and wait until they stopped.
    Stop(StopArgs),
    /// Set the replica count of a container set.
    Scale(ScaleArgs),
    /// Mark a node unschedulable.
    Cordon(NodeArgs),
    /// Mark a node schedulable again.
    Uncordon(NodeArgs),
    /// Cordon a node and move its tasks to other nodes; waits until they run elsewhere.
    Drain(DrainArgs),
    /// Rolling updates of container sets: status, history, undo.
    Rollout(RolloutArgs),
    /// Set (k=v) or remove (k-) labels of a resource.
    Label(LabelArgs),
    /// Print a task's output (history, then new lines with -f); set/NAME or -l merge several.
    Logs(LogsArgs),
    /// Run a command in a running task's container.
    Exec(ExecArgs),
    /// Show current CPU and memory use of nodes or tasks.
    Top(TopArgs),
    /// Upgrade node agents to a new binary, one node (or --parallel N) at a time.
    #[command(subcommand)]
    Upgrade(UpgradeCommand),
    /// Manage the config file.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Node join tokens and HTTP API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Print a shell completion script.
    Completion {
        /// The shell.
        shell: Shell,
    },
}

/// `token` subcommands.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a one-time join token for a new node (`voiyd-node --join-token`), or with
    /// --admin a bearer token for the HTTP API (`Authorization: Bearer TOKEN`).
    Create {
        /// How long the token stays valid, e.g. 1h [default: 24h; at most 30 days for a
        /// join token, 365 days for an API token].
        #[arg(long, value_name = "DURATION")]
        ttl: Option<String>,
        /// An HTTP API token with the admin identity's rights (needs --auth on the
        /// servers), usable any number of times until it expires.
        #[arg(long)]
        admin: bool,
    },
}

/// `create` arguments.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Manifest file, or `-` for stdin; repeatable.
    #[arg(
        short = 'f',
        long = "filename",
        value_name = "FILE",
        required_unless_present = "what"
    )]
    pub files: Vec<String>,
    /// `volume host-local NAME`, `volume template NAME FILE` (FILE `-` reads stdin) or
    /// `secret NAME` (with --from-literal and --from-file).
    #[arg(value_name = "WHAT", conflicts_with = "files")]
    pub what: Vec<String>,
    /// For a secret: a value KEY=VALUE; repeatable.
    #[arg(long = "from-literal", value_name = "KEY=VALUE")]
    pub from_literal: Vec<String>,
    /// For a secret: a file's content as a value, KEY=PATH or PATH (the key is the file
    /// name); repeatable.
    #[arg(long = "from-file", value_name = "[KEY=]PATH")]
    pub from_file: Vec<String>,
    /// For a host-local volume: when every node holding its data is gone, its tasks may
    /// start on another node with an empty directory instead of waiting.
    #[arg(long)]
    pub recreate: bool,
    /// For a host-local volume: only nodes with this label KEY=VALUE; repeatable.
    #[arg(long = "node-selector", value_name = "KEY=VALUE")]
    pub node_selector: Vec<String>,
    /// Labels of the volume KEY=VALUE; repeatable.
    #[arg(short = 'l', long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
}

/// Manifest file arguments.
#[derive(Debug, Args)]
pub struct FileArgs {
    /// Manifest file, or `-` for stdin; repeatable.
    #[arg(short = 'f', long = "filename", value_name = "FILE", required = true)]
    pub files: Vec<String>,
}

/// `apply` arguments.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// Manifest file, or `-` for stdin; repeatable.
    #[arg(short = 'f', long = "filename", value_name = "FILE", required = true)]
    pub files: Vec<String>,
    /// Write nothing: the servers validate each resource and say what would happen
    /// (created, updated, unchanged; the node each new or moved task would go to, or why
    /// it would wait; the tasks a set update would replace or remove).
    #[arg(long)]
    pub dry_run: bool,
}

/// `diff` arguments.
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// Manifest file, or `-` for stdin; repeatable.
    #[arg(short = 'f', long = "filename", value_name = "FILE", required = true)]
    pub files: Vec<String>,
}

/// `get` arguments.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// tasks, nodes, volumes, sets, leases or events (singular, plural or alias).
    pub kind: String,
    /// Names to show; all when none.
    pub names: Vec<String>,
    /// Label selector, e.g. `app=web,tier!=db`.
    #[arg(short = 'l', long = "selector", value_name = "SELECTOR")]
    pub selector: Option<String>,
    /// Field selector, applied by the server, e.g. `node=n1,phase!=Running` (tasks: name,
    /// node, phase, reason, image; nodes: name, phase, runtime, version).
    #[arg(long = "field-selector", value_name = "SELECTOR")]
    pub field_selector: Option<String>,
    /// After the list, print each change as it happens, until Ctrl-C.
    #[arg(short = 'w', long = "watch")]
    pub watch: bool,
    /// Like --watch, without the list first.
    #[arg(long = "watch-only")]
    pub watch_only: bool,
    /// With --watch: say what happened (ADDED, MODIFIED, DELETED) before each change.
    #[arg(long = "output-watch-events")]
    pub output_watch_events: bool,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    pub output: Output,
}

/// Waiting for a state after an action.
#[derive(Debug, Args, Clone, Default)]
pub struct WaitArgs {
    /// Wait until the state is reached (default).
    #[arg(long, overrides_with = "no_wait")]
    pub wait: bool,
    /// Return as soon as the server accepted the request.
    #[arg(long = "no-wait")]
    pub no_wait: bool,
}

impl WaitArgs {
    /// Whether to wait.
    pub fn enabled(&self) -> bool {
        !self.no_wait || self.wait
    }
}

/// `delete` arguments.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// Kind of the resources to delete (not with -f).
    pub kind: Option<String>,
    /// Names of the resources.
    pub names: Vec<String>,
    /// Delete what these manifests name.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub files: Vec<String>,
    /// Remove everything the resource left behind (e.g. volume data).
    #[arg(long)]
    pub purge: bool,
    /// Delete even when the resource is in use, and kill instead of stopping gracefully.
    #[arg(long)]
    pub force: bool,
    /// Waiting (tasks only).
    #[command(flatten)]
    pub wait: WaitArgs,
}

/// `edit` arguments.
#[derive(Debug, Args)]
pub struct EditArgs {
    /// Kind of the resource.
    pub kind: String,
    /// Its name.
    pub name: String,
}

/// `events` arguments.
#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Follow new events until Ctrl-C.
    #[arg(short = 'w', long = "watch")]
    pub watch: bool,
    /// Start at a stream sequence number, or this long ago (e.g. 10m).
    #[arg(long, value_name = "SEQ|DURATION")]
    pub since: Option<String>,
    /// Only events of this kind.
    #[arg(long)]
    pub kind: Option<String>,
    /// Only events of resources with this name.
    #[arg(long)]
    pub name: Option<String>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    pub output: EventOutput,
}

/// `run` arguments.
#[derive(Debug, Args, Default)]
pub struct RunArgs {
    /// Task name.
    pub name: String,
    /// Image reference.
    #[arg(long)]
    pub image: String,
    /// Environment variable NAME=VALUE; repeatable.
    #[arg(short = 'e', long = "env", value_name = "NAME=VALUE")]
    pub env: Vec<String>,
    /// Label KEY=VALUE; repeatable.
    #[arg(short = 'l', long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Only nodes with this label KEY=VALUE; repeatable.
    #[arg(long = "node-selector", value_name = "KEY=VALUE")]
    pub node_selector: Vec<String>,
    /// Restart policy.
    #[arg(long, value_enum)]
    pub restart: Option<Restart>,
    /// CPU request, e.g. 0.5 or 500m.
    #[arg(long)]
    pub cpu: Option<String>,
    /// Memory request, e.g. 256Mi.
    #[arg(long)]
    pub memory: Option<String>,
    /// Publish a port: [HOST_IP:]HOST_PORT:CONTAINER_PORT[/tcp|udp]; repeatable.
    #[arg(short = 'p', long = "publish", value_name = "PORT")]
    pub publish: Vec<String>,
    /// Mount a volume (VOLUME:/path[:ro]) or host directory (/host:/path[:ro]); repeatable.
    #[arg(short = 'v', long = "volume", value_name = "VOLUME:/PATH[:ro]")]
    pub volumes: Vec<String>,
    /// User name or uid[:gid] inside the container.
    #[arg(long)]
    pub user: Option<String>,
    /// Working directory inside the container.
    #[arg(long)]
    pub workdir: Option<String>,
    /// Run privileged.
    #[arg(long)]
    pub privileged: bool,
    /// Add a Linux capability; repeatable.
    #[arg(long = "cap-add", value_name = "CAP")]
    pub cap_add: Vec<String>,
    /// Drop a Linux capability; repeatable.
    #[arg(long = "cap-drop", value_name = "CAP")]
    pub cap_drop: Vec<String>,
    /// Use the host's network namespace.
    #[arg(long = "host-network")]
    pub host_network: bool,
    /// Replace the image entrypoint; repeat for each word.
    #[arg(long = "command", value_name = "CMD")]
    pub command: Vec<String>,
    /// Always or IfNotPresent.
    #[arg(long = "pull-policy", value_name = "POLICY")]
    pub pull_policy: Option<String>,
    /// Time between SIGTERM and SIGKILL on stop, e.g. 10s.
    #[arg(long = "stop-grace", value_name = "DURATION")]
    pub stop_grace: Option<String>,
    /// Readiness check, run with `sh -c` in the container (exit 0: ready), as Docker's
    /// --health-cmd; becomes the task's readinessProbe. The wait is for ready.
    #[arg(long = "health-cmd", value_name = "CMD")]
    pub health_cmd: Option<String>,
    /// Time between checks (default 10s).
    #[arg(
        long = "health-interval",
        value_name = "DURATION",
        requires = "health_cmd"
    )]
    pub health_interval: Option<String>,
    /// Time one check may take (default 1s).
    #[arg(
        long = "health-timeout",
        value_name = "DURATION",
        requires = "health_cmd"
    )]
    pub health_timeout: Option<String>,
    /// Failures in a row before the task counts as not ready (default 3).
    #[arg(long = "health-retries", value_name = "N", requires = "health_cmd")]
    pub health_retries: Option<u32>,
    /// Time after start before the first check (default 0s).
    #[arg(
        long = "health-start-period",
        value_name = "DURATION",
        requires = "health_cmd"
    )]
    pub health_start_period: Option<String>,
    /// Run to completion as Docker's `run --rm` does: wait until the task's process ends,
    /// print its output, delete the task and exit with its exit code (restart policy never).
    #[arg(long)]
    pub rm: bool,
    /// Waiting.
    #[command(flatten)]
    pub wait: WaitArgs,
    /// Arguments to the container command (after `--`).
    #[arg(last = true)]
    pub args: Vec<String>,
}

/// `start` arguments.
#[derive(Debug, Args)]
pub struct ActionArgs {
    /// Kind: task.
    pub kind: String,
    /// Task names.
    #[arg(required = true)]
    pub names: Vec<String>,
    /// Waiting.
    #[command(flatten)]
    pub wait: WaitArgs,
}

/// `stop` arguments.
#[derive(Debug, Args)]
pub struct StopArgs {
    /// Kind: task.
    pub kind: String,
    /// Task names.
    #[arg(required = true)]
    pub names: Vec<String>,
    /// Kill at once instead of SIGTERM and a grace period.
    #[arg(long)]
    pub force: bool,
    /// Waiting.
    #[command(flatten)]
    pub wait: WaitArgs,
}

/// `scale` arguments.
#[derive(Debug, Args)]
pub struct ScaleArgs {
    /// Kind: set.
    pub kind: String,
    /// Set name.
    pub name: String,
    /// Desired number of tasks.
    #[arg(long)]
    pub replicas: u32,
}

/// `cordon` / `uncordon` arguments.
#[derive(Debug, Args)]
pub struct NodeArgs {
    /// Node name.
    pub node: String,
}

/// `drain` arguments.
#[derive(Debug, Args)]
pub struct DrainArgs {
    /// Node name.
    pub node: String,
    /// How long to wait for the node's tasks to run elsewhere, e.g. 2m [default: --timeout or 2m].
    #[arg(long, value_name = "DURATION")]
    pub deadline: Option<String>,
}

/// `rollout` arguments.
#[derive(Debug, Args)]
pub struct RolloutArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: RolloutCommand,
}

/// `rollout` subcommands.
#[derive(Debug, Subcommand)]
pub enum RolloutCommand {
    /// Wait until the set's rollout finishes (fails if it rolled back or stalled).
    Status {
        /// Kind: set.
        kind: String,
        /// Set name.
        name: String,
    },
    /// List the templates the set has run.
    History {
        /// Kind: set.
        kind: String,
        /// Set name.
        name: String,
    },
    /// Go back to the previous template (or --to-revision N).
    Undo {
        /// Kind: set.
        kind: String,
        /// Set name.
        name: String,
        /// Revision from `rollout history`.
        #[arg(long)]
        to_revision: Option<u64>,
    },
}

/// `label` arguments.
#[derive(Debug, Args)]
pub struct LabelArgs {
    /// Kind of the resource (e.g. node).
    pub kind: String,
    /// Its name.
    pub name: String,
    /// KEY=VALUE to set, KEY- to remove.
    #[arg(required = true)]
    pub labels: Vec<String>,
}

/// `config` subcommands.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Write a config with one server `local` at nats://127.0.0.1:4222.
    Init {
        /// Overwrite an existing config.
        #[arg(long)]
        force: bool,
    },
    /// Add or replace a server.
    CreateServer(Box<CreateServerArgs>),
    /// Make a server the current one.
    Use {
        /// Server name.
        name: String,
    },
    /// Print the config (secrets redacted unless --raw).
    View {
        /// Show passwords, tokens, seeds and private keys.
        #[arg(long)]
        raw: bool,
    },
    /// List the servers; `*` marks the current one.
    ListServers,
}

/// `config create-server` arguments.
#[derive(Debug, Args, Default)]
pub struct CreateServerArgs {
    /// Server name.
    pub name: String,
    /// NATS URL(s), comma-separated.
    #[arg(long)]
    pub address: String,
    /// Require TLS.
    #[arg(long)]
    pub tls: bool,
    /// CA bundle (PEM file, stored inline).
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM file, stored inline).
    #[arg(long, value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// Client key (PEM file, stored inline).
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// Skip verification of the server certificate.
    #[arg(long)]
    pub insecure: bool,
    /// NATS credentials file.
    #[arg(long, value_name = "FILE")]
    pub creds: Option<PathBuf>,
    /// NATS nkey seed file.
    #[arg(long = "nkey", value_name = "FILE")]
    pub nkey: Option<PathBuf>,
    /// NATS user.
    #[arg(long)]
    pub user: Option<String>,
    /// NATS password.
    #[arg(long)]
    pub password: Option<String>,
    /// NATS token.
    #[arg(long)]
    pub token: Option<String>,
    /// Also make it the current server.
    #[arg(long = "use")]
    pub use_it: bool,
}

/// `logs` arguments.
#[derive(Debug, Clone, Args)]
pub struct LogsArgs {
    /// TASK, task/NAME or set/NAME.
    pub target: Option<String>,
    /// Merge the logs of every task matching this label selector.
    #[arg(short = 'l', long = "selector", value_name = "SELECTOR")]
    pub selector: Option<String>,
    /// Keep printing new lines until interrupted.
    #[arg(short = 'f', long = "follow")]
    pub follow: bool,
    /// Only the last N lines of history.
    #[arg(long, value_name = "N")]
    pub tail: Option<u32>,
    /// Only lines since a duration ago (10m) or a time (RFC 3339).
    #[arg(long, value_name = "DURATION|TIME")]
    pub since: Option<String>,
    /// Show when each line was written.
    #[arg(short = 't', long)]
    pub timestamps: bool,
    /// Only stdout.
    #[arg(long)]
    pub stdout: bool,
    /// Only stderr.
    #[arg(long)]
    pub stderr: bool,
    /// Prefix lines with their task even for one task.
    #[arg(long)]
    pub prefix: bool,
    /// The run before the latest (before the last restart), from the logs the cluster
    /// stored.
    #[arg(short = 'p', long, conflicts_with = "follow")]
    pub previous: bool,
}

/// `exec` arguments.
#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Pass stdin to the process.
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Allocate a terminal.
    #[arg(short = 't', long)]
    pub tty: bool,
    /// The task.
    pub task: String,
    /// The command and its arguments (after `--`).
    #[arg(last = true)]
    pub command: Vec<String>,
}

/// `upgrade` subcommands.
#[derive(Debug, Subcommand)]
pub enum UpgradeCommand {
    /// Store a voiyd-node binary once (JetStream object store, SHA-256 checked) and move
    /// node agents to it: each fetches it, checks it runs, re-execs itself (containers
    /// keep running) and must be Ready on it within --timeout. Stops at the first node
    /// that refuses or does not come back; that node keeps (or gets back) its old binary.
    Nodes(UpgradeNodesArgs),
}

/// `upgrade nodes` arguments.
#[derive(Debug, Args)]
pub struct UpgradeNodesArgs {
    /// Nodes to upgrade (default: every node, or those matching -l).
    pub names: Vec<String>,
    /// Only nodes matching this label selector.
    #[arg(short = 'l', long = "selector", value_name = "SELECTOR")]
    pub selector: Option<String>,
    /// The new voiyd-node binary.
    #[arg(long, value_name = "FILE", required_unless_present = "rollback")]
    pub binary: Option<std::path::PathBuf>,
    /// How many nodes at a time.
    #[arg(long, default_value_t = 1)]
    pub parallel: usize,
    /// How long each node gets to come back Ready on the new binary.
    #[arg(long, default_value = "120s")]
    pub timeout: String,
    /// Put each node back on the binary it ran before its last upgrade.
    #[arg(long, conflicts_with = "binary")]
    pub rollback: bool,
}

/// `top` arguments.
#[derive(Debug, Args)]
pub struct TopArgs {
    /// nodes or tasks.
    pub kind: String,
    /// Only tasks matching this label selector.
    #[arg(short = 'l', long = "selector", value_name = "SELECTOR")]
    pub selector: Option<String>,
}
