use super::*;
use figment::Jail;

#[test]
fn defaults_match_the_documented_table() {
    let s = Settings::default();
    assert_eq!(s.port, 7900);
    assert_eq!(s.max_message_bytes, 65536);
    assert_eq!(s.max_connections_per_mesh, 100);
    assert_eq!(s.presence_grace_seconds, 90);
    assert_eq!(s.queue_ttl_seconds, 604_800);
    assert_eq!(s.delivered_retention_seconds, 3600);
    let c = s.resolve(false);
    assert_eq!(c.hook_auth, HookAuth::Token);
    assert_eq!(c.bind.to_string(), "0.0.0.0");
    let d = Settings::default().resolve(true);
    assert_eq!(d.hook_auth, HookAuth::None);
    assert_eq!(d.bind.to_string(), "127.0.0.1");
    assert_eq!(d.log_format, LogFormat::Pretty);
}

#[test]
fn layers_file_then_env_with_seed_names() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "config.toml",
            "port = 8000\nsend_burst = 3\nstatus_ttl_seconds = 5\n",
        )?;
        jail.set_env("BROKER_SEND_BURST", "4");
        jail.set_env("MAX_MESSAGE_BYTES", "1000");
        jail.set_env("STATUS_TTL_SECONDS", "7");
        jail.set_env("BROKER_STATUS_TTL_SECONDS", "9");
        jail.set_env("BROKER_URL", "http://ignored");
        let s = Settings::load(None, &CliOverrides::default()).map_err(|e| e.to_string())?;
        assert_eq!(s.port, 8000);
        assert_eq!(s.send_burst, 4);
        assert_eq!(s.max_message_bytes, 1000);
        assert_eq!(s.status_ttl_seconds, 9, "prefixed name beats the seed name");
        let cli = CliOverrides {
            port: Some(9),
            bind: None,
        };
        let s = Settings::load(None, &cli).map_err(|e| e.to_string())?;
        assert_eq!(s.port, 9);
        Ok(())
    });
}

#[test]
fn unknown_key_in_file_is_named() {
    Jail::expect_with(|jail| {
        jail.create_file("config.toml", "prot = 8000\n")?;
        let err = Settings::load(None, &CliOverrides::default()).unwrap_err();
        assert!(err.to_string().contains("prot"), "{err}");
        Ok(())
    });
}

#[test]
fn bad_values_are_named() {
    Jail::expect_with(|jail| {
        jail.set_env("BROKER_PORT", "seventy");
        let err = Settings::load(None, &CliOverrides::default()).unwrap_err();
        assert!(err.to_string().to_lowercase().contains("port"), "{err}");
        Ok(())
    });
    Jail::expect_with(|jail| {
        jail.set_env("BROKER_HOOK_AUTH", "maybe");
        let err = Settings::load(None, &CliOverrides::default()).unwrap_err();
        assert!(
            err.to_string().to_lowercase().contains("hook_auth"),
            "{err}"
        );
        Ok(())
    });
    Jail::expect_with(|jail| {
        jail.set_env("BROKER_PING_INTERVAL_SECONDS", "80");
        let err = Settings::load(None, &CliOverrides::default()).unwrap_err();
        assert!(err.to_string().contains("pong_timeout_seconds"), "{err}");
        Ok(())
    });
    Jail::expect_with(|jail| {
        jail.set_env("BROKER_SEND_BURST", "0");
        let err = Settings::load(None, &CliOverrides::default()).unwrap_err();
        assert!(err.to_string().contains("send_burst"), "{err}");
        Ok(())
    });
    Jail::expect_with(|jail| {
        jail.set_env("BROKER_DELIVERED_RETENTION_SECONDS", "99999999999");
        let err = Settings::load(None, &CliOverrides::default()).unwrap_err();
        assert!(
            err.to_string().contains("delivered_retention_seconds"),
            "{err}"
        );
        jail.set_env("BROKER_DELIVERED_RETENTION_SECONDS", "0");
        let s = Settings::load(None, &CliOverrides::default()).map_err(|e| e.to_string())?;
        assert_eq!(s.delivered_retention_seconds, 0, "0 keeps nothing");
        Ok(())
    });
}

/// Every size and duration has a ceiling, named when passed (a TTL of
/// centuries used to panic at the first send).
#[test]
fn every_bound_names_its_key() {
    let keys: Vec<&str> = Settings::default()
        .upper_bounds()
        .iter()
        .map(|(k, _, _)| *k)
        .collect();
    for (key, _, max) in Settings::default().upper_bounds() {
        assert!(KEYS.contains(&key), "{key}");
        Jail::expect_with(|jail| {
            jail.set_env(
                format!("BROKER_{}", key.to_uppercase()),
                (max + 1).to_string(),
            );
            let err = Settings::load(None, &CliOverrides::default()).unwrap_err();
            assert!(err.to_string().contains(key), "{key}: {err}");
            Ok(())
        });
    }
    for key in KEYS
        .iter()
        .filter(|k| k.ends_with("_seconds") || k.ends_with("_bytes"))
    {
        assert!(keys.contains(key), "`{key}` has no upper bound");
    }
    Jail::expect_with(|jail| {
        jail.set_env("BROKER_MAX_MESSAGE_BYTES", "2000000");
        let err = Settings::load(None, &CliOverrides::default()).unwrap_err();
        assert!(err.to_string().contains("max_frame_bytes"), "{err}");
        jail.set_env("BROKER_MAX_FRAME_BYTES", "3000000");
        Settings::load(None, &CliOverrides::default()).map_err(|e| e.to_string())?;
        jail.set_env("BROKER_DATABASE_CA_FILE", "/nonexistent/ca.pem");
        let err = Settings::load(None, &CliOverrides::default()).unwrap_err();
        assert!(err.to_string().contains("database_ca_file"), "{err}");
        Ok(())
    });
}

#[test]
fn missing_explicit_config_file_fails() {
    let err = Settings::load(
        Some(Path::new("/nonexistent/broker.toml")),
        &CliOverrides::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("does not exist"));
}

#[test]
fn top_level_config_toml_documents_every_key() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml"))
        .expect("config.toml at the top level");
    for key in KEYS {
        let needle = format!("{key} =");
        assert!(text.contains(&needle), "config.toml does not list `{key}`");
    }
}
