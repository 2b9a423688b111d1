//! Which Redis: `redis.url` (a standalone `redis://`/`rediss://` server, or
//! `redis+cluster://host1:port1,host2:port2` for a cluster, or
//! `redis+sentinel://[:password@]s1:port,s2:port/master[/db]` for the master
//! that Redis Sentinels name), else
//! `redis.cluster_nodes`, else `redis.host` with its port, db and password,
//! else none (the embedded store).

use std::path::PathBuf;
use std::time::Duration;

use percent_encoding::percent_decode_str;

use super::{ConfigError, SentinelSettings, StoreSettings, positive, raw};

impl raw::Redis {
    pub(super) fn validate(self) -> Result<StoreSettings, ConfigError> {
        let connect_timeout = Duration::from_millis(positive(
            "redis.connect_timeout_ms",
            self.connect_timeout_ms,
        )?);
        let command_timeout = Duration::from_millis(positive(
            "redis.command_timeout_ms",
            self.command_timeout_ms,
        )?);
        let ca_file = ca_file(&self.ca_file)?;
        let cluster = |nodes: Vec<String>| StoreSettings::RedisCluster {
            nodes,
            connect_timeout,
            command_timeout,
            ca_file: ca_file.clone(),
        };
        if let Some(nodes) = cluster_url_nodes(&self.url)? {
            return Ok(cluster(nodes));
        }
        if let Some(mut sentinel) = sentinel_url(&self.url)? {
            sentinel.sentinel_password = Some(self.sentinel_password).filter(|p| !p.is_empty());
            return Ok(StoreSettings::RedisSentinel {
                sentinel,
                connect_timeout,
                command_timeout,
            });
        }
        if self.url.is_empty() && !self.cluster_nodes.is_empty() {
            for node in &self.cluster_nodes {
                standalone(node, "redis.cluster_nodes")?;
            }
            return Ok(cluster(self.cluster_nodes));
        }
        let url = if !self.url.is_empty() {
            self.url
        } else if !self.host.is_empty() {
            let auth = if self.password.is_empty() {
                String::new()
            } else {
                format!(":{}@", percent_encode_userinfo(&self.password))
            };
            format!("redis://{auth}{}:{}/{}", self.host, self.port, self.db)
        } else {
            return Ok(StoreSettings::Memory);
        };
        standalone(&url, "redis.url")?;
        Ok(StoreSettings::Redis {
            url,
            connect_timeout,
            command_timeout,
            ca_file,
        })
    }
}

/// `redis.ca_file`, checked now so that a wrong path stops the start.
fn ca_file(path: &str) -> Result<Option<PathBuf>, ConfigError> {
    if path.is_empty() {
        return Ok(None);
    }
    let pem = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::invalid("redis.ca_file", format!("{path}: {e}")))?;
    if !pem.contains("-----BEGIN CERTIFICATE-----") {
        return Err(ConfigError::invalid(
            "redis.ca_file",
            format!("{path} holds no PEM certificate"),
        ));
    }
    Ok(Some(PathBuf::from(path)))
}

fn standalone(url: &str, key: &'static str) -> Result<(), ConfigError> {
    redis::parse_redis_url(url)
        .filter(|u| matches!(u.scheme(), "redis" | "rediss" | "redis+unix" | "unix"))
        .map(drop)
        .ok_or_else(|| {
            ConfigError::invalid(
                key,
                "not a redis://, rediss://, redis+cluster:// or redis+sentinel:// URL",
            )
        })
}

/// The nodes of a `redis+cluster://` (or `rediss+cluster://`) URL, each as a
/// standalone URL with the same credentials; `None` for other URLs.
fn cluster_url_nodes(url: &str) -> Result<Option<Vec<String>>, ConfigError> {
    let (scheme, rest) = match url.split_once("://") {
        Some(("redis+cluster", rest)) => ("redis", rest),
        Some(("rediss+cluster", rest)) => ("rediss", rest),
        _ => return Ok(None),
    };
    let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => (format!("{userinfo}@"), hosts),
        None => (String::new(), authority),
    };
    if !path.is_empty() && path != "0" {
        return Err(ConfigError::invalid(
            "redis.url",
            "a cluster has only database 0",
        ));
    }
    let nodes: Vec<String> = hosts
        .split(',')
        .filter(|h| !h.is_empty())
        .map(|host| format!("{scheme}://{userinfo}{host}"))
        .collect();
    if nodes.is_empty() {
        return Err(ConfigError::invalid(
            "redis.url",
            "a redis+cluster:// URL names no node",
        ));
    }
    for node in &nodes {
        standalone(node, "redis.url")?;
    }
    Ok(Some(nodes))
}

/// The Sentinels, the master's name, its db and credentials of a
/// `redis+sentinel://[user:password@]host:port,host:port/master[/db]` URL;
/// `None` for other URLs. The credentials are the master's (and its
/// replicas'); the Sentinels' own password is `redis.sentinel_password`.
fn sentinel_url(url: &str) -> Result<Option<SentinelSettings>, ConfigError> {
    let Some(rest) = url.strip_prefix("redis+sentinel://") else {
        if url.starts_with("rediss+sentinel://") {
            return Err(ConfigError::invalid(
                "redis.url",
                "TLS to Sentinels is not supported; use redis+sentinel://",
            ));
        }
        return Ok(None);
    };
    let invalid = |why: &str| ConfigError::invalid("redis.url", why);
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => (Some(userinfo), hosts),
        None => (None, authority),
    };
    let decode = |part: &str| {
        percent_decode_str(part)
            .decode_utf8()
            .map(|s| s.into_owned())
            .map_err(|_| invalid("the credentials are not UTF-8 once decoded"))
    };
    let (username, password) = match userinfo.map(|u| u.split_once(':').unwrap_or((u, ""))) {
        Some((user, password)) => (
            Some(decode(user)?).filter(|u| !u.is_empty()),
            Some(decode(password)?).filter(|p| !p.is_empty()),
        ),
        None => (None, None),
    };
    let mut sentinels = Vec::new();
    for host in hosts.split(',').filter(|h| !h.is_empty()) {
        let port_ok = host
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
        if !port_ok {
            return Err(invalid("each Sentinel must be host:port"));
        }
        sentinels.push(host.to_owned());
    }
    if sentinels.is_empty() {
        return Err(invalid("a redis+sentinel:// URL names no Sentinel"));
    }
    let mut segments = path.split('/').filter(|s| !s.is_empty());
    let master = segments
        .next()
        .ok_or_else(|| invalid("a redis+sentinel:// URL must name the master: .../mymaster"))?
        .to_owned();
    let db = match segments.next() {
        Some(db) => db
            .parse::<i64>()
            .ok()
            .filter(|db| *db >= 0)
            .ok_or_else(|| invalid("the db after the master's name must be a number"))?,
        None => 0,
    };
    if segments.next().is_some() {
        return Err(invalid(
            "a redis+sentinel:// URL ends with /master or /master/db",
        ));
    }
    Ok(Some(SentinelSettings {
        sentinels,
        master,
        db,
        username,
        password,
        sentinel_password: None,
    }))
}

/// Escapes the characters that would end the userinfo part of a URL.
fn percent_encode_userinfo(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_url_names_every_node_with_the_same_credentials() {
        let nodes = cluster_url_nodes("redis+cluster://:pw@10.0.0.1:7000,10.0.0.2:7001/")
            .unwrap()
            .unwrap();
        assert_eq!(
            nodes,
            ["redis://:pw@10.0.0.1:7000", "redis://:pw@10.0.0.2:7001"]
        );
        assert_eq!(cluster_url_nodes("redis://localhost:6379").unwrap(), None);
        assert!(cluster_url_nodes("redis+cluster:///").is_err());
        assert!(
            cluster_url_nodes("redis+cluster://a:1/3").is_err(),
            "no db but 0 on a cluster"
        );
    }

    #[test]
    fn a_sentinel_url_names_the_sentinels_the_master_and_its_db() {
        let s = sentinel_url("redis+sentinel://:p%40ss@10.0.0.1:26379,sentinel-2:26380/mymaster/3")
            .unwrap()
            .unwrap();
        assert_eq!(s.sentinels, ["10.0.0.1:26379", "sentinel-2:26380"]);
        assert_eq!(s.master, "mymaster");
        assert_eq!(s.db, 3);
        assert_eq!(s.username, None);
        assert_eq!(s.password.as_deref(), Some("p@ss"), "percent-decoded");

        let s = sentinel_url("redis+sentinel://app:pw@s:26379/cache")
            .unwrap()
            .unwrap();
        assert_eq!((s.username.as_deref(), s.db), (Some("app"), 0));
        assert_eq!(sentinel_url("redis://localhost:6379").unwrap(), None);
    }

    #[test]
    fn a_sentinel_url_without_a_master_or_a_port_is_refused() {
        for bad in [
            "redis+sentinel://s:26379",
            "redis+sentinel://s:26379/",
            "redis+sentinel://s/mymaster",
            "redis+sentinel:///mymaster",
            "redis+sentinel://s:26379/mymaster/x",
            "redis+sentinel://s:26379/mymaster/0/extra",
            "rediss+sentinel://s:26379/mymaster",
        ] {
            assert!(sentinel_url(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn settings_never_show_a_password_in_debug_output() {
        let s = sentinel_url("redis+sentinel://:hunter2@s:26379/m")
            .unwrap()
            .unwrap();
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
