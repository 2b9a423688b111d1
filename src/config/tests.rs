//! Layering and validation, without touching the process environment.

use std::collections::HashMap;
use std::io::Write;

use super::*;

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn file(toml: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    f.write_all(toml.as_bytes()).unwrap();
    f
}

fn load(
    file: Option<&tempfile::NamedTempFile>,
    env: HashMap<String, String>,
    flags: Flags,
) -> Result<Settings, ConfigError> {
    Settings::load(&Sources {
        file: file.map(|f| f.path().to_path_buf()),
        env,
        flags,
    })
}

#[test]
fn defaults_need_no_file_and_use_the_memory_store() {
    let settings = load(None, env(&[]), Flags::default()).expect("defaults are valid");
    assert_eq!(settings.server.listen.to_string(), "0.0.0.0:8080");
    assert_eq!(settings.server.max_request_bytes, 32 * 1024 * 1024);
    assert_eq!(settings.upstream.url.as_str(), "https://api.openai.com/");
    assert!(
        matches!(settings.store, StoreSettings::Memory),
        "no Redis configured"
    );
    assert_eq!(settings.history_ttl, Duration::from_secs(86_400));
    assert_eq!(settings.api_prefix, "/tether");
}

#[test]
fn file_then_env_then_flags_each_override_the_layer_below() {
    let f = file(
        r#"
        [server]
        listen = "127.0.0.1:1000"
        shutdown_grace_secs = 7
        [upstream]
        url = "http://file.example"
        connect_timeout_secs = 3
        "#,
    );
    let e = env(&[
        ("TETHER_UPSTREAM__URL", "http://env.example/base"),
        ("TETHER_UPSTREAM__CONNECT_TIMEOUT_SECS", "4"),
    ]);
    let from_file_and_env = load(Some(&f), e.clone(), Flags::default()).unwrap();
    assert_eq!(
        from_file_and_env.server.listen.to_string(),
        "127.0.0.1:1000",
        "file beats default"
    );
    assert_eq!(
        from_file_and_env.server.shutdown_grace,
        Duration::from_secs(7),
        "file beats default"
    );
    assert_eq!(
        from_file_and_env.upstream.url.as_str(),
        "http://env.example/base",
        "env beats file"
    );
    assert_eq!(
        from_file_and_env.upstream.connect_timeout,
        Duration::from_secs(4),
        "env beats file"
    );

    let flags = Flags {
        upstream: Some("http://flag.example".into()),
        listen: Some("127.0.0.1:2000".into()),
        ..Flags::default()
    };
    let all = load(Some(&f), e, flags).unwrap();
    assert_eq!(
        all.upstream.url.as_str(),
        "http://flag.example/",
        "flag beats env"
    );
    assert_eq!(
        all.server.listen.to_string(),
        "127.0.0.1:2000",
        "flag beats file"
    );
}

#[test]
fn familiar_environment_names_are_honoured() {
    let settings = load(
        None,
        env(&[
            ("REDIS_HOST", "cache.internal"),
            ("REDIS_PORT", "6380"),
            ("REDIS_DB", "3"),
            ("REDIS_PASSWORD", "p@ss word"),
            ("CHAT_HISTORY_TTL", "3600"),
        ]),
        Flags::default(),
    )
    .unwrap();
    match settings.store {
        StoreSettings::Redis { url, .. } => {
            assert_eq!(url, "redis://:p%40ss%20word@cache.internal:6380/3")
        }
        other => panic!("REDIS_HOST should select Redis, got {other:?}"),
    }
    assert_eq!(settings.history_ttl, Duration::from_secs(3600));
}

#[test]
fn redis_url_beats_host_and_tether_env_beats_familiar_names() {
    let settings = load(
        None,
        env(&[
            ("REDIS_HOST", "ignored"),
            ("REDIS_URL", "redis://from-redis-url:6379/0"),
            ("CHAT_HISTORY_TTL", "10"),
            ("TETHER_HISTORY__TTL_SECS", "20"),
        ]),
        Flags::default(),
    )
    .unwrap();
    assert!(
        matches!(&settings.store, StoreSettings::Redis { url, .. } if url == "redis://from-redis-url:6379/0"),
        "{:?}",
        settings.store
    );
    assert_eq!(settings.history_ttl, Duration::from_secs(20));

    let flag = load(
        None,
        env(&[("REDIS_URL", "redis://env:6379")]),
        Flags {
            redis_url: Some("redis://flag:6379".into()),
            ..Flags::default()
        },
    )
    .unwrap();
    assert!(matches!(&flag.store, StoreSettings::Redis { url, .. } if url == "redis://flag:6379"));
}

/// Each bad value stops the start with one line that names the key.
#[test]
fn a_sentinel_url_and_the_sentinels_password_make_a_sentinel_store() {
    let settings = load(
        None,
        env(&[
            (
                "REDIS_URL",
                "redis+sentinel://:pw@s1:26379,s2:26379/mymaster/1",
            ),
            ("TETHER_REDIS__SENTINEL_PASSWORD", "sentinel-pw"),
        ]),
        Flags::default(),
    )
    .unwrap();
    let StoreSettings::RedisSentinel { sentinel, .. } = settings.store else {
        panic!("a Sentinel store, got {:?}", settings.store);
    };
    assert_eq!(sentinel.sentinels, ["s1:26379", "s2:26379"]);
    assert_eq!((sentinel.master.as_str(), sentinel.db), ("mymaster", 1));
    assert_eq!(sentinel.password.as_deref(), Some("pw"));
    assert_eq!(sentinel.sentinel_password.as_deref(), Some("sentinel-pw"));
}

#[test]
fn a_bad_value_is_one_line_naming_its_key() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[("TETHER_SERVER__MAX_REQUEST_BYTES", "lots")],
            "server.max_request_bytes",
        ),
        (&[("TETHER_SERVER__LISTEN", "nowhere")], "server.listen"),
        (&[("TETHER_UPSTREAM__URL", "ftp://x")], "upstream.url"),
        (&[("TETHER_UPSTREAM__URL", "not a url")], "upstream.url"),
        (
            &[("TETHER_UPSTREAM__CA_FILE", "/no/such/ca.pem")],
            "upstream.ca_file",
        ),
        (
            &[("TETHER_UPSTREAM__HEADER_TIMEOUT_SECS", "0")],
            "upstream.header_timeout_secs",
        ),
        (&[("TETHER_LOG__FORMAT", "xml")], "log.format"),
        (&[("TETHER_API__PREFIX", "no-slash")], "api.prefix"),
        (&[("REDIS_URL", "http://not-redis")], "redis.url"),
        (&[("REDIS_URL", "redis+sentinel://s:26379")], "redis.url"),
        (
            &[("TETHER_REDIS__CA_FILE", "/no/such/ca.pem")],
            "redis.ca_file",
        ),
        (&[("CHAT_HISTORY_TTL", "a day")], "history.ttl_secs"),
        (&[("TETHER_STORE__WRITERS", "0")], "store.writers"),
        (&[("TETHER_STORE__WRITERS", "17")], "store.writers"),
        (
            &[("TETHER_STORE__MEMORY_MAX_MB", "0")],
            "store.memory_max_mb",
        ),
        (&[("TETHER_STORE__QUEUE_MAX_MB", "0")], "store.queue_max_mb"),
        (&[("TETHER_SERVER__LISTN", "0.0.0.0:1")], "listn"),
    ];
    for (vars, key) in cases {
        let error = load(None, env(vars), Flags::default())
            .expect_err(&format!("{vars:?} must be rejected"));
        let line = error.to_string();
        assert!(
            line.contains(key),
            "{vars:?}: the error {line:?} should name {key}"
        );
        assert!(!line.contains('\n'), "{vars:?}: one line, got {line:?}");
    }
}

#[test]
fn unknown_keys_in_the_file_are_rejected() {
    let f = file("[upstream]\nurll = \"http://typo\"\n");
    let error = load(Some(&f), env(&[]), Flags::default())
        .unwrap_err()
        .to_string();
    assert!(error.contains("urll"), "{error}");
}

#[test]
fn a_missing_explicit_config_file_is_an_error() {
    let error = Settings::load(&Sources {
        file: Some("/no/such/tether.toml".into()),
        ..Sources::default()
    })
    .unwrap_err()
    .to_string();
    assert!(error.contains("/no/such/tether.toml"), "{error}");
}

#[test]
fn the_shipped_default_file_matches_the_built_in_defaults() {
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/config/default.toml");
    let text = std::fs::read_to_string(shipped).unwrap();
    let from_file: RawSettings = toml_roundtrip(&text);
    let built_in = serde_json::to_value(RawSettings::default()).unwrap();
    assert_eq!(
        serde_json::to_value(from_file).unwrap(),
        built_in,
        "config/default.toml drifted from the defaults"
    );
}

fn toml_roundtrip(text: &str) -> RawSettings {
    config::Config::builder()
        .add_source(config::File::from_str(text, config::FileFormat::Toml))
        .build()
        .unwrap()
        .try_deserialize()
        .unwrap()
}

#[test]
fn only_section_key_names_are_settings() {
    let settings = load(
        None,
        env(&[
            ("TETHER_SDK_PYTHON", "/usr/bin/python3"),
            ("TETHER_HOME", "/opt/tether"),
        ]),
        Flags::default(),
    );
    assert!(
        settings.is_ok(),
        "TETHER_ variables without SECTION__KEY are not settings: {:?}",
        settings.err()
    );
}
