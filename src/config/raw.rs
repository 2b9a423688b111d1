//! The settings as the layers spell them, with their built-in defaults, and
//! the layering itself. Unknown keys are rejected in every section so that a
//! typo stops the start instead of being silently ignored.

use config::{Config, Environment, File, FileFormat};
use serde::{Deserialize, Serialize};

use super::{ConfigError, DEFAULT_CONFIG_FILE, Sources};

/// The environment names other chat-history services use, and the key each sets.
/// They sit below `TETHER_*` variables, which are more specific.
const FAMILIAR_ENV: &[(&str, &str)] = &[
    ("REDIS_URL", "REDIS__URL"),
    ("REDIS_HOST", "REDIS__HOST"),
    ("REDIS_PORT", "REDIS__PORT"),
    ("REDIS_DB", "REDIS__DB"),
    ("REDIS_PASSWORD", "REDIS__PASSWORD"),
    ("CHAT_HISTORY_TTL", "HISTORY__TTL_SECS"),
];

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawSettings {
    pub server: Server,
    pub upstream: Upstream,
    pub redis: Redis,
    pub store: StoreQueue,
    pub history: History,
    pub sessions: Sessions,
    pub auth: Auth,
    pub record: Record,
    pub streams: Streams,
    pub chat: Chat,
    pub api: Api,
    pub ui: Ui,
    pub log: Log,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Server {
    pub listen: String,
    pub max_request_bytes: u64,
    pub shutdown_grace_secs: u64,
    pub header_read_timeout_secs: u64,
    pub max_connections: u64,
}

impl Default for Server {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:8080".into(),
            max_request_bytes: 32 * 1024 * 1024,
            shutdown_grace_secs: 30,
            header_read_timeout_secs: 30,
            max_connections: 10_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Upstream {
    pub url: String,
    pub connect_timeout_secs: u64,
    pub header_timeout_secs: u64,
    pub idle_timeout_secs: u64,
    pub pool_idle_timeout_secs: u64,
    pub pool_max_idle_per_host: u64,
    pub ca_file: String,
}

impl Default for Upstream {
    fn default() -> Self {
        Self {
            url: "https://api.openai.com".into(),
            connect_timeout_secs: 10,
            // A non-streamed completion sends its headers only when the whole
            // answer is ready, which takes minutes for long reasoning answers.
            header_timeout_secs: 600,
            idle_timeout_secs: 300,
            pool_idle_timeout_secs: 90,
            pool_max_idle_per_host: 256,
            ca_file: String::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Redis {
    pub url: String,
    pub cluster_nodes: Vec<String>,
    pub host: String,
    pub port: u16,
    pub db: u32,
    pub password: String,
    /// The Sentinels' own password, when they have one (`requirepass` in
    /// sentinel.conf); the master's comes from the URL.
    pub sentinel_password: String,
    /// PEM CA certificates that sign a `rediss://` server's certificate
    /// (instead of the public roots).
    pub ca_file: String,
    pub connect_timeout_ms: u64,
    pub command_timeout_ms: u64,
}

impl Default for Redis {
    fn default() -> Self {
        Self {
            url: String::new(),
            cluster_nodes: Vec::new(),
            host: String::new(),
            port: 6379,
            db: 0,
            password: String::new(),
            sentinel_password: String::new(),
            ca_file: String::new(),
            connect_timeout_ms: 2_000,
            command_timeout_ms: 2_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreQueue {
    pub queue_capacity: u64,
    pub queue_max_mb: u64,
    pub writers: u64,
    pub memory_max_mb: u64,
}

impl Default for StoreQueue {
    fn default() -> Self {
        Self {
            queue_capacity: 100_000,
            queue_max_mb: 256,
            writers: 2,
            memory_max_mb: 512,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct History {
    pub ttl_secs: u64,
}

impl Default for History {
    fn default() -> Self {
        Self { ttl_secs: 86_400 }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Sessions {
    pub from_user: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Auth {
    pub tenancy: String,
    pub admin_token: String,
    pub required: bool,
}

impl Default for Auth {
    fn default() -> Self {
        Self {
            tenancy: "api-key".into(),
            admin_token: String::new(),
            required: false,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Record {
    pub enabled: bool,
    pub max_response_bytes: u64,
    pub include_usage: bool,
}

impl Default for Record {
    fn default() -> Self {
        Self {
            enabled: true,
            max_response_bytes: 16 * 1024 * 1024,
            include_usage: false,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Streams {
    pub on_disconnect: String,
    pub max_duration_secs: u64,
    pub max_detached: u64,
    pub retention_secs: u64,
    pub idle_timeout_secs: u64,
    pub checkpoint_interval_ms: u64,
    pub checkpoint_max_events: u64,
    pub follow_interval_ms: u64,
}

impl Default for Streams {
    fn default() -> Self {
        Self {
            on_disconnect: "finish".into(),
            max_duration_secs: 3600,
            max_detached: 1000,
            retention_secs: 300,
            idle_timeout_secs: 15,
            checkpoint_interval_ms: 5000,
            checkpoint_max_events: 1024,
            follow_interval_ms: 20,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Chat {
    pub max_context_messages: u64,
    pub default_model: String,
}

impl Default for Chat {
    fn default() -> Self {
        Self {
            max_context_messages: 50,
            default_model: String::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Api {
    pub prefix: String,
}

impl Default for Api {
    fn default() -> Self {
        Self {
            prefix: "/tether".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Ui {
    pub enabled: bool,
}

impl Default for Ui {
    fn default() -> Self {
        Self { enabled: true }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Log {
    pub format: String,
    pub level: String,
}

impl Default for Log {
    fn default() -> Self {
        Self {
            format: "text".into(),
            level: "info".into(),
        }
    }
}

/// Layers the sources into raw settings, lowest precedence first.
pub fn load(sources: &Sources) -> Result<RawSettings, ConfigError> {
    let file = match &sources.file {
        Some(path) => File::from(path.as_path())
            .format(FileFormat::Toml)
            .required(true),
        None => File::new(DEFAULT_CONFIG_FILE, FileFormat::Toml).required(false),
    };
    let familiar: config::Map<String, String> = FAMILIAR_ENV
        .iter()
        .filter_map(|(name, key)| sources.env.get(*name).map(|v| (key.to_string(), v.clone())))
        .collect();
    // Only `TETHER_SECTION__KEY` names are settings: other variables that
    // happen to start with `TETHER_` (a wrapper script's, a test's) are not.
    let tether_env: config::Map<String, String> = sources
        .env
        .iter()
        .filter(|(k, _)| {
            k.strip_prefix("TETHER_")
                .is_some_and(|rest| rest.contains("__"))
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut builder = Config::builder()
        .add_source(Config::try_from(&RawSettings::default())?)
        .add_source(file)
        .add_source(
            Environment::default()
                .separator("__")
                .source(Some(familiar)),
        )
        .add_source(
            Environment::with_prefix("TETHER")
                .prefix_separator("_")
                .separator("__")
                .source(Some(tether_env)),
        );
    let flags = &sources.flags;
    for (key, value) in [
        ("server.listen", &flags.listen),
        ("upstream.url", &flags.upstream),
        ("redis.url", &flags.redis_url),
        ("log.format", &flags.log_format),
    ] {
        if let Some(value) = value {
            builder = builder.set_override(key, value.as_str())?;
        }
    }
    Ok(builder.build()?.try_deserialize()?)
}
