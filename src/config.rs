//! Settings and their loading: built-in defaults, then a TOML file, then the
//! familiar environment names (`REDIS_URL`, `CHAT_HISTORY_TTL`, ...), then
//! `TETHER_SECTION__KEY` variables, then command-line flags.
//!
//! Loading never reads the process environment by itself: the caller hands in
//! the variables ([`Sources::env`]), so tests can layer settings without
//! touching global state. [`RawSettings`] is what the layers deserialize into;
//! [`RawSettings::validate`] turns it into the checked [`Settings`] the rest of
//! the program uses.

mod raw;
mod redis_url;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use raw::RawSettings;

/// The file read when `--config` is not given; a missing default file is fine.
pub const DEFAULT_CONFIG_FILE: &str = "config/default.toml";

/// Where settings come from, lowest precedence first (flags win).
#[derive(Debug, Default, Clone)]
pub struct Sources {
    /// `--config FILE`: must exist. `None` reads [`DEFAULT_CONFIG_FILE`] if present.
    pub file: Option<PathBuf>,
    /// The environment, usually `std::env::vars().collect()`.
    pub env: HashMap<String, String>,
    /// Command-line flags, already parsed.
    pub flags: Flags,
}

/// The settings that have a flag of their own.
#[derive(Debug, Default, Clone)]
pub struct Flags {
    pub listen: Option<String>,
    pub upstream: Option<String>,
    pub redis_url: Option<String>,
    pub log_format: Option<String>,
}

/// A configuration that cannot be used; the message names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Load(#[from] config::ConfigError),
    #[error("{key}: {reason}")]
    Invalid { key: &'static str, reason: String },
}

impl ConfigError {
    fn invalid(key: &'static str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            key,
            reason: reason.into(),
        }
    }
}

/// Checked settings, as the running proxy uses them.
#[derive(Debug, Clone)]
pub struct Settings {
    pub server: ServerSettings,
    pub upstream: UpstreamSettings,
    pub store: StoreSettings,
    /// History turns that may wait for the store (write-behind queue).
    pub store_queue_capacity: usize,
    /// The write-behind queue's weight bound (`store.queue_max_mb`).
    pub store_queue_max_bytes: usize,
    /// History writer tasks (`store.writers`).
    pub store_writers: usize,
    /// What the embedded store may hold before it evicts (`store.memory_max_mb`).
    pub store_memory_max_bytes: usize,
    pub history_ttl: Duration,
    pub sessions: SessionSettings,
    pub auth: AuthSettings,
    pub record: RecordSettings,
    pub streams: StreamSettings,
    pub chat: ChatSettings,
    pub api_prefix: String,
    /// Serve the web console and the demo chat page under `{api_prefix}/ui`.
    pub ui_enabled: bool,
    pub log: LogSettings,
}

#[derive(Debug, Clone)]
pub struct SessionSettings {
    /// Take the session id from the body's `user` field when nothing else names one.
    pub from_user: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tenancy {
    /// Each credential is its own tenant.
    ApiKey,
    /// Everybody shares one tenant (local upstreams without keys).
    None,
}

#[derive(Debug, Clone)]
pub struct AuthSettings {
    pub tenancy: Tenancy,
    /// Sees every tenant; `None` when not set.
    pub admin_token: Option<String>,
    /// Proxied requests without a credential are refused (401) instead of forwarded.
    pub required: bool,
}

#[derive(Debug, Clone)]
pub struct RecordSettings {
    pub enabled: bool,
    /// Largest (decoded) response recorded; a longer one is recorded cut
    /// short, marked incomplete, and still forwarded whole.
    pub max_response_bytes: usize,
    /// Ask for the usage chunk when the client did not, and hide it from the client.
    pub include_usage: bool,
}

#[derive(Debug, Clone)]
pub struct ChatSettings {
    /// History longer than this is cut from the oldest turns for `/tether/chat`
    /// (system messages stay).
    pub max_context_messages: usize,
    /// The model of a chat turn that names none.
    pub default_model: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnDisconnect {
    /// Keep reading the upstream to the end, so the answer is recorded.
    Finish,
    /// Close the upstream connection and record what arrived.
    Cancel,
}

#[derive(Debug, Clone)]
pub struct StreamSettings {
    pub on_disconnect: OnDisconnect,
    /// A stream read on after its client left is cut off after this long.
    pub max_duration: Duration,
    /// Streams read on after their clients left, at most; beyond, the oldest is cancelled.
    pub max_detached: usize,
    /// How long a finished stream stays resumable.
    pub retention: Duration,
    /// An active stream whose owner's heartbeat is older than this is `interrupted`.
    pub idle_timeout: Duration,
    /// Checkpoint batches go out at this interval (at a third of
    /// `idle_timeout` if that is shorter: a batch is the owner's heartbeat).
    pub checkpoint_interval: Duration,
    /// Events in one batch at most; more go out as several batches.
    pub checkpoint_max_events: usize,
    /// Once a reader on another replica follows a stream, its new events
    /// are checkpointed as they come, at most this often.
    pub follow_interval: Duration,
}

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub listen: SocketAddr,
    pub max_request_bytes: u64,
    pub shutdown_grace: Duration,
    pub header_read_timeout: Duration,
    pub max_connections: usize,
}

#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    /// Scheme, authority and base path (no trailing slash) of the upstream.
    pub url: url::Url,
    pub connect_timeout: Duration,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub pool_idle_timeout: Duration,
    pub pool_max_idle_per_host: usize,
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub enum StoreSettings {
    /// No Redis configured: the embedded in-memory store.
    Memory,
    Redis {
        url: String,
        connect_timeout: Duration,
        command_timeout: Duration,
        /// Trust for `rediss://`: these CAs instead of the public roots.
        ca_file: Option<PathBuf>,
    },
    /// A Redis Cluster, reached through any of these nodes.
    RedisCluster {
        nodes: Vec<String>,
        connect_timeout: Duration,
        command_timeout: Duration,
        ca_file: Option<PathBuf>,
    },
    /// The master that Redis Sentinels name, asked for again after a failover.
    RedisSentinel {
        sentinel: SentinelSettings,
        connect_timeout: Duration,
        command_timeout: Duration,
    },
}

/// Where the Sentinels are and what they call the master.
#[derive(Clone, PartialEq, Eq)]
pub struct SentinelSettings {
    /// `host:port` of each Sentinel.
    pub sentinels: Vec<String>,
    /// The master's name in sentinel.conf (`sentinel monitor NAME ...`).
    pub master: String,
    pub db: i64,
    /// The master's credentials (from the URL), never logged.
    pub username: Option<String>,
    pub password: Option<String>,
    pub sentinel_password: Option<String>,
}

impl std::fmt::Debug for SentinelSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = |secret: &Option<String>| secret.as_ref().map(|_| "***");
        f.debug_struct("SentinelSettings")
            .field("sentinels", &self.sentinels)
            .field("master", &self.master)
            .field("db", &self.db)
            .field("username", &self.username)
            .field("password", &shown(&self.password))
            .field("sentinel_password", &shown(&self.sentinel_password))
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct LogSettings {
    pub format: LogFormat,
    /// A `tracing_subscriber::EnvFilter` directive, e.g. `info` or `tether=debug`.
    pub level: String,
}

impl Settings {
    /// Loads and validates the layered settings.
    pub fn load(sources: &Sources) -> Result<Settings, ConfigError> {
        raw::load(sources)?.validate()
    }
}

impl RawSettings {
    /// Turns raw settings into checked ones, naming the first bad key.
    pub fn validate(self) -> Result<Settings, ConfigError> {
        let listen =
            self.server.listen.parse().map_err(|e| {
                ConfigError::invalid("server.listen", format!("{e} (want host:port)"))
            })?;
        positive("server.max_request_bytes", self.server.max_request_bytes)?;
        positive(
            "server.header_read_timeout_secs",
            self.server.header_read_timeout_secs,
        )?;
        positive("server.max_connections", self.server.max_connections)?;
        let server = ServerSettings {
            listen,
            max_request_bytes: self.server.max_request_bytes,
            shutdown_grace: Duration::from_secs(self.server.shutdown_grace_secs),
            header_read_timeout: Duration::from_secs(self.server.header_read_timeout_secs),
            max_connections: self.server.max_connections as usize,
        };
        Ok(Settings {
            server,
            upstream: self.upstream.validate()?,
            store: self.redis.validate()?,
            store_queue_capacity: positive("store.queue_capacity", self.store.queue_capacity)?
                as usize,
            store_queue_max_bytes: positive("store.queue_max_mb", self.store.queue_max_mb)?
                .saturating_mul(1024 * 1024) as usize,
            store_writers: match self.store.writers {
                1..=16 => self.store.writers as usize,
                _ => return Err(ConfigError::invalid("store.writers", "must be 1 to 16")),
            },
            store_memory_max_bytes: positive("store.memory_max_mb", self.store.memory_max_mb)?
                .saturating_mul(1024 * 1024) as usize,
            history_ttl: Duration::from_secs(positive("history.ttl_secs", self.history.ttl_secs)?),
            sessions: SessionSettings {
                from_user: self.sessions.from_user,
            },
            auth: self.auth.validate()?,
            record: RecordSettings {
                enabled: self.record.enabled,
                max_response_bytes: positive(
                    "record.max_response_bytes",
                    self.record.max_response_bytes,
                )? as usize,
                include_usage: self.record.include_usage,
            },
            streams: self.streams.validate()?,
            chat: ChatSettings {
                max_context_messages: positive(
                    "chat.max_context_messages",
                    self.chat.max_context_messages,
                )? as usize,
                default_model: (!self.chat.default_model.is_empty())
                    .then_some(self.chat.default_model),
            },
            api_prefix: validate_prefix(&self.api.prefix)?,
            ui_enabled: self.ui.enabled,
            log: self.log.validate()?,
        })
    }
}

impl raw::Upstream {
    fn validate(self) -> Result<UpstreamSettings, ConfigError> {
        let url = url::Url::parse(&self.url)
            .map_err(|e| ConfigError::invalid("upstream.url", format!("{e}: {:?}", self.url)))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(ConfigError::invalid(
                "upstream.url",
                "scheme must be http or https",
            ));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(ConfigError::invalid("upstream.url", "has no host"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(ConfigError::invalid(
                "upstream.url",
                "must not carry a query or fragment",
            ));
        }
        let ca_file = (!self.ca_file.is_empty()).then(|| PathBuf::from(&self.ca_file));
        if let Some(path) = &ca_file
            && !path.is_file()
        {
            return Err(ConfigError::invalid(
                "upstream.ca_file",
                format!("no file at {}", path.display()),
            ));
        }
        positive("upstream.connect_timeout_secs", self.connect_timeout_secs)?;
        positive("upstream.header_timeout_secs", self.header_timeout_secs)?;
        positive("upstream.idle_timeout_secs", self.idle_timeout_secs)?;
        Ok(UpstreamSettings {
            url,
            connect_timeout: Duration::from_secs(self.connect_timeout_secs),
            header_timeout: Duration::from_secs(self.header_timeout_secs),
            idle_timeout: Duration::from_secs(self.idle_timeout_secs),
            pool_idle_timeout: Duration::from_secs(self.pool_idle_timeout_secs),
            pool_max_idle_per_host: self.pool_max_idle_per_host as usize,
            ca_file,
        })
    }
}

impl raw::Auth {
    fn validate(self) -> Result<AuthSettings, ConfigError> {
        let tenancy = match self.tenancy.as_str() {
            "api-key" => Tenancy::ApiKey,
            "none" => Tenancy::None,
            other => {
                return Err(ConfigError::invalid(
                    "auth.tenancy",
                    format!("{other:?} is not \"api-key\" or \"none\""),
                ));
            }
        };
        if !self.admin_token.is_empty() && self.admin_token.len() < 16 {
            return Err(ConfigError::invalid(
                "auth.admin_token",
                "must be at least 16 characters",
            ));
        }
        Ok(AuthSettings {
            tenancy,
            admin_token: (!self.admin_token.is_empty()).then_some(self.admin_token),
            required: self.required,
        })
    }
}

impl raw::Streams {
    fn validate(self) -> Result<StreamSettings, ConfigError> {
        let on_disconnect = match self.on_disconnect.as_str() {
            "finish" => OnDisconnect::Finish,
            "cancel" => OnDisconnect::Cancel,
            other => {
                return Err(ConfigError::invalid(
                    "streams.on_disconnect",
                    format!("{other:?} is not \"finish\" or \"cancel\""),
                ));
            }
        };
        Ok(StreamSettings {
            on_disconnect,
            max_duration: Duration::from_secs(positive(
                "streams.max_duration_secs",
                self.max_duration_secs,
            )?),
            max_detached: positive("streams.max_detached", self.max_detached)? as usize,
            retention: Duration::from_secs(positive(
                "streams.retention_secs",
                self.retention_secs,
            )?),
            idle_timeout: Duration::from_secs(positive(
                "streams.idle_timeout_secs",
                self.idle_timeout_secs,
            )?),
            checkpoint_interval: Duration::from_millis(positive(
                "streams.checkpoint_interval_ms",
                self.checkpoint_interval_ms,
            )?),
            checkpoint_max_events: positive(
                "streams.checkpoint_max_events",
                self.checkpoint_max_events,
            )? as usize,
            follow_interval: Duration::from_millis(positive(
                "streams.follow_interval_ms",
                self.follow_interval_ms,
            )?),
        })
    }
}

impl raw::Log {
    fn validate(self) -> Result<LogSettings, ConfigError> {
        let format = match self.format.as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                return Err(ConfigError::invalid(
                    "log.format",
                    format!("{other:?} is not \"text\" or \"json\""),
                ));
            }
        };
        tracing_subscriber::EnvFilter::try_new(&self.level)
            .map_err(|e| ConfigError::invalid("log.level", e.to_string()))?;
        Ok(LogSettings {
            format,
            level: self.level,
        })
    }
}

/// The own-route prefix: one or more path segments, leading slash, none trailing.
fn validate_prefix(prefix: &str) -> Result<String, ConfigError> {
    let trimmed = prefix.trim_end_matches('/');
    let valid = trimmed.starts_with('/')
        && trimmed.len() > 1
        && trimmed[1..].split('/').all(|seg| {
            !seg.is_empty()
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        });
    if !valid {
        return Err(ConfigError::invalid(
            "api.prefix",
            format!("{prefix:?} is not a path like \"/tether\""),
        ));
    }
    Ok(trimmed.to_string())
}

fn positive(key: &'static str, value: u64) -> Result<u64, ConfigError> {
    if value == 0 {
        return Err(ConfigError::invalid(key, "must be greater than 0"));
    }
    Ok(value)
}

#[cfg(test)]
mod tests;
