//! Which Redis: `redis.url` (a standalone `redis://`/`rediss://` server, or
//! `redis+cluster://host1:port1,host2:port2` for a cluster), else
//! `redis.cluster_nodes`, else `redis.host` with its port, db and password,
//! else none (the embedded store).

use std::time::Duration;

use super::{ConfigError, StoreSettings, positive, raw};

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
        let cluster = |nodes: Vec<String>| StoreSettings::RedisCluster {
            nodes,
            connect_timeout,
            command_timeout,
        };
        if let Some(nodes) = cluster_url_nodes(&self.url)? {
            return Ok(cluster(nodes));
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
        })
    }
}

fn standalone(url: &str, key: &'static str) -> Result<(), ConfigError> {
    redis::parse_redis_url(url)
        .filter(|u| matches!(u.scheme(), "redis" | "rediss" | "redis+unix" | "unix"))
        .map(drop)
        .ok_or_else(|| {
            ConfigError::invalid(key, "not a redis://, rediss:// or redis+cluster:// URL")
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
}
