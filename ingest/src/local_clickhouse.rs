//! A ClickHouse server's configuration for running one as a plain process on 127.0.0.1
//! (tests and benchmarks start private servers with it; `scripts/servers.sh` writes the
//! same settings for the test suite's shared server). Works with 18.16 and current versions.

use std::path::{Path, PathBuf};

/// The ports a local server listens on.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub http: u16,
    pub tcp: u16,
    pub interserver: u16,
}

/// Creates `dir`'s data directories and writes `users.xml` and `config.xml` (passwordless
/// `default` user, loopback only, UTC, logs in `dir`); returns the path of `config.xml`, for
/// `clickhouse-server --config-file=...`.
pub fn write_config(dir: &Path, ports: Ports) -> std::io::Result<PathBuf> {
    for sub in ["data", "tmp", "user_files", "format_schemas"] {
        std::fs::create_dir_all(dir.join(sub))?;
    }
    std::fs::write(
        dir.join("users.xml"),
        r#"<?xml version="1.0"?>
<yandex>
  <profiles><default><max_memory_usage>4000000000</max_memory_usage></default></profiles>
  <users><default><password></password><networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
    <profile>default</profile><quota>default</quota></default></users>
  <quotas><default></default></quotas>
</yandex>
"#,
    )?;
    let d = dir.display();
    let Ports {
        http,
        tcp,
        interserver,
    } = ports;
    let config = dir.join("config.xml");
    std::fs::write(
        &config,
        format!(
            r#"<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>{d}/server.log</log><errorlog>{d}/error.log</errorlog><console>0</console></logger>
  <listen_host>127.0.0.1</listen_host>
  <http_port>{http}</http_port>
  <tcp_port>{tcp}</tcp_port>
  <interserver_http_port>{interserver}</interserver_http_port>
  <path>{d}/data/</path>
  <tmp_path>{d}/tmp/</tmp_path>
  <user_files_path>{d}/user_files/</user_files_path>
  <format_schema_path>{d}/format_schemas/</format_schema_path>
  <users_config>{d}/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <timezone>UTC</timezone>
  <mark_cache_size>536870912</mark_cache_size>
  <max_concurrent_queries>100</max_concurrent_queries>
</yandex>
"#
        ),
    )?;
    Ok(config)
}
