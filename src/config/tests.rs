use super::*;

fn flags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn defaults_match_the_protocol() {
    let c = Config::load(&BTreeMap::new(), |_| None).unwrap();
    assert_eq!(c.bind.to_string(), "127.0.0.1:8000");
    assert_eq!(c.heartbeat_interval, Duration::from_secs(30));
    assert_eq!(c.heartbeat_timeout, Duration::from_secs(60));
    assert_eq!(c.max_connections, 100_000);
    assert_eq!(c.max_message_bytes, 65_536);
    assert_eq!(c.send_queue, 1024);
    assert_eq!((c.rate_limit_per_s, c.rate_limit_burst), (100, 200));
    assert_eq!(c.history_size, 100);
    assert_eq!(c.shutdown_grace, Duration::from_secs(5));
    assert_eq!(c.allowed_origins, AllowedOrigins::Loopback);
    assert_eq!(c.allowed_hosts, AllowedHosts::Local);
    assert_eq!(c.max_rooms_per_connection, 1000);
    assert_eq!(c.max_history_bytes, 64 * 1024 * 1024);
}

#[test]
fn sizes_take_every_documented_form() {
    assert_eq!(parse_size("64MiB"), Ok(64 << 20));
    assert_eq!(parse_size("512KiB"), Ok(512 << 10));
    assert_eq!(parse_size("1GiB"), Ok(1 << 30));
    assert_eq!(parse_size("4096"), Ok(4096));
    assert_eq!(parse_size("100B"), Ok(100));
    assert_eq!(parse_size(" 2 mib "), Ok(2 << 20));
    assert_eq!(parse_size("0"), Ok(0));
    for bad in [
        "",
        "MiB",
        "-1",
        "1.5MiB",
        "64MB",
        "64M",
        "1e6",
        "1 2",
        "99999999999999999999",
    ] {
        assert!(parse_size(bad).is_err(), "{bad}");
    }
    assert!(parse_size(&format!("{}GiB", usize::MAX >> 20)).is_err());
}

#[test]
fn room_and_history_limits_load_from_every_source() {
    let c = Config::load(&flags(&[("max_history_bytes", "512KiB")]), |n| {
        (n == "WSHUB_MAX_ROOMS_PER_CONNECTION").then(|| "5".to_string())
    })
    .unwrap();
    assert_eq!(c.max_history_bytes, 512 * 1024);
    assert_eq!(c.max_rooms_per_connection, 5);
    let c = Config::load(&BTreeMap::new(), |n| {
        (n == "WSHUB_MAX_HISTORY_BYTES").then(|| "1000".to_string())
    })
    .unwrap();
    assert_eq!(c.max_history_bytes, 1000);
}

#[test]
fn durations_take_every_documented_form() {
    assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
    assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
    assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
    assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
    assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
    for bad in ["", "s", "-1s", "abc", "1x", "1e9999", "NaN", "inf"] {
        assert!(parse_duration(bad).is_err(), "{bad}");
    }
}

#[test]
fn flag_beats_env_beats_file_beats_default() {
    let dir = std::env::temp_dir().join(format!("wshub-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("hub.toml");
    std::fs::write(
        &path,
        "send_queue = 7\nhistory_size = 8\nheartbeat_interval = \"3s\"\nallowed_origins = [\"https://a.example\", \"http://b.example:81\"]\nallowed_hosts = [\"Hub.Example\", \"10.0.0.5\"]\n",
    )
    .unwrap();
    let env = |name: &str| match name {
        "WSHUB_HISTORY_SIZE" => Some("9".to_string()),
        "WSHUB_HEARTBEAT_INTERVAL" => Some("4s".to_string()),
        _ => None,
    };
    let c = Config::load(
        &flags(&[
            ("config", path.to_str().unwrap()),
            ("heartbeat_interval", "5s"),
        ]),
        env,
    )
    .unwrap();
    assert_eq!(c.send_queue, 7, "file");
    assert_eq!(c.history_size, 9, "env beats file");
    assert_eq!(
        c.heartbeat_interval,
        Duration::from_secs(5),
        "flag beats env"
    );
    assert_eq!(
        c.allowed_origins,
        AllowedOrigins::List(vec![
            "https://a.example".into(),
            "http://b.example:81".into()
        ])
    );
    assert_eq!(
        c.allowed_hosts,
        AllowedHosts::List(vec!["hub.example".into(), "10.0.0.5".into()])
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bad_values_name_the_setting() {
    let cases = [
        ("heartbeat_interval", "soon"),
        ("heartbeat_interval", "0"),
        ("send_queue", "0"),
        ("send_queue", "-3"),
        ("max_message_bytes", "10"),
        ("bind", "not an address"),
        ("allowed_origins", "ftp//x"),
        ("allowed_hosts", "hub.example:8000"),
        ("allowed_hosts", ","),
        ("jwt_secret", ""),
        ("max_connections", "0"),
        ("max_history_bytes", "lots"),
        ("max_history_bytes", "64MB"),
        ("max_history_bytes", "0"),
        ("max_rooms_per_connection", "0"),
        ("max_rooms_per_connection", "many"),
    ];
    for (name, value) in cases {
        let e = Config::load(&flags(&[(name, value)]), |_| None).unwrap_err();
        assert_eq!(e.setting, name, "{name}={value}: {e}");
    }
    let e = Config::load(&BTreeMap::new(), |n| {
        (n == "WSHUB_SEND_QUEUE").then(|| "lots".to_string())
    })
    .unwrap_err();
    assert_eq!(e.setting, "send_queue");
    assert!(e.message.contains("WSHUB_SEND_QUEUE"), "{e}");
}

#[test]
fn unknown_file_keys_and_bad_files_are_refused() {
    let dir = std::env::temp_dir().join(format!("wshub-config-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let unknown = dir.join("unknown.toml");
    std::fs::write(&unknown, "sned_queue = 5\n").unwrap();
    let e = Config::load(&flags(&[("config", unknown.to_str().unwrap())]), |_| None).unwrap_err();
    assert_eq!(e.setting, "sned_queue");
    let broken = dir.join("broken.toml");
    std::fs::write(&broken, "send_queue = \n").unwrap();
    let e = Config::load(&flags(&[("config", broken.to_str().unwrap())]), |_| None).unwrap_err();
    assert_eq!(e.setting, "config");
    let missing = dir.join("missing.toml");
    let e = Config::load(&flags(&[("config", missing.to_str().unwrap())]), |_| None).unwrap_err();
    assert_eq!(e.setting, "config");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn origins_accept_star_and_normalise_case() {
    let mut c = Config::default();
    c.set_str("allowed_origins", "*").unwrap();
    assert_eq!(c.allowed_origins, AllowedOrigins::Any);
    c.set_str(
        "allowed_origins",
        "HTTPS://App.Example:8443, http://[::1]:3000",
    )
    .unwrap();
    assert_eq!(
        c.allowed_origins,
        AllowedOrigins::List(vec![
            "https://app.example:8443".into(),
            "http://[::1]:3000".into()
        ])
    );
    assert!(
        c.set_str("allowed_origins", "https://a.example/path")
            .is_err()
    );
}

#[test]
fn hosts_take_a_comma_list_or_star_and_bind_names_count() {
    let c = Config::load(&BTreeMap::new(), |n| {
        (n == "WSHUB_ALLOWED_HOSTS").then(|| "a.example, [::1]".to_string())
    })
    .unwrap();
    assert_eq!(
        c.allowed_hosts,
        AllowedHosts::List(vec!["a.example".into(), "[::1]".into()])
    );
    let c = Config::load(&flags(&[("allowed_hosts", "*")]), |_| None).unwrap();
    assert_eq!(c.allowed_hosts, AllowedHosts::Any);
    let mut c = Config::default();
    c.set_str("bind", "localhost:0").unwrap();
    assert_eq!(c.bind_name.as_deref(), Some("localhost"));
    c.set_str("bind", "127.0.0.1:0").unwrap();
    assert_eq!(c.bind_name, None);
}

#[test]
fn log_levels_parse() {
    assert_eq!("warn".parse::<LogLevel>(), Ok(LogLevel::Warn));
    assert_eq!("DEBUG".parse::<LogLevel>(), Ok(LogLevel::Debug));
    assert!("loud".parse::<LogLevel>().is_err());
}
