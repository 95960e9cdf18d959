//! `mqtt-board --config FILE`: the connection settings in TOML, so a deployed board does not
//! carry its password on the command line. Flags given on the command line win over the file;
//! keys missing from both take the client's defaults.
//!
//! ```toml
//! host = "broker.example.net"
//! port = 8883
//! tls = true
//! cafile = "/etc/mqtt/ca.pem"
//! id = "greenhouse-3"
//! keepalive = 30
//! clean = false
//! user = "greenhouse"
//! password = "…"
//! iface = "wlan0"
//! will = { topic = "greenhouse/3/status", payload = "offline", qos = 1, retain = true }
//! ```

use mqtt_host::{default_config, settings_struct, Config, TlsParams};

mqtt_host::with_config_keys!(settings_struct;
    /// Every setting of a board connection, all optional so a file can hold any subset: every
    /// key of the component's config (the one settings schema, `mqtt_host::settings`; the
    /// board's habitual names `host`, `id`, `keepalive`, `tls` and `v5` are aliases there), and
    /// the board's own TLS files and network interface.
    pub struct BoardConfig {
        /// Skip the broker certificate check (logged as a warning on every connection).
        #[serde(default)]
        pub insecure: Option<bool>,
        #[serde(default)]
        pub cafile: Option<String>,
        #[serde(default)]
        pub cert: Option<String>,
        #[serde(default)]
        pub key: Option<String>,
        /// ALPN protocols offered in the TLS handshake, e.g. `["x-amzn-mqtt-ca"]`.
        #[serde(default)]
        pub alpn: Option<Vec<String>>,
        /// Network interface whose link state is reported to the client.
        #[serde(default)]
        pub iface: Option<String>,
    }
);

impl BoardConfig {
    pub fn load(path: &std::path::Path) -> Result<BoardConfig, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> Result<BoardConfig, String> {
        let c: BoardConfig = toml::from_str(text).map_err(|e| match e.span() {
            Some(span) => mqtt_host::source_position::describe(text, span.start, e.message()),
            None => e.message().to_string(),
        })?;
        if let Some(w) = &c.will {
            w.to_will()?;
        }
        Ok(c)
    }

    /// The component config: the client's defaults (server `localhost`, id
    /// `mqtt-board-<pid>`), these keys over them, and TLS when any TLS setting asks for it.
    pub fn client_config(&self) -> Result<Config, String> {
        let mut cfg = default_config("localhost", &format!("mqtt-board-{}", std::process::id()));
        cfg.seed = u64::from(std::process::id());
        self.apply_to(&mut cfg)?;
        // The board's `clean` is the session for the whole run: the first connection too,
        // unless `clean_init` says otherwise.
        if self.clean_init.is_none() {
            cfg.clean_init = cfg.clean;
        }
        if cfg.ssl || self.insecure == Some(true) || self.cafile.is_some() || self.cert.is_some() || self.alpn.is_some() {
            if self.cert.is_some() != self.key.is_some() {
                return Err("a client certificate needs both --cert and --key".into());
            }
            cfg.ssl = true;
            cfg.ssl_params = Some(TlsParams {
                server_name: cfg.server.clone(),
                ca_file: self.cafile.clone(),
                client_cert_file: self.cert.clone(),
                client_key_file: self.key.clone(),
                alpn: self.alpn.clone().unwrap_or_default(),
            });
        }
        Ok(cfg)
    }

    /// `self` (the command line) where set, `file` elsewhere.
    pub fn over(self, file: BoardConfig) -> BoardConfig {
        let own = BoardConfig {
            insecure: self.insecure.or(file.insecure),
            cafile: self.cafile.clone().or(file.cafile.clone()),
            cert: self.cert.clone().or(file.cert.clone()),
            key: self.key.clone().or(file.key.clone()),
            alpn: self.alpn.clone().or(file.alpn.clone()),
            iface: self.iface.clone().or(file.iface.clone()),
            ..self.clone()
        };
        own.or(&file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_example_parses() {
        let doc = include_str!("file_config.rs");
        let example: String = doc
            .lines()
            .skip_while(|l| !l.starts_with("//! ```toml"))
            .skip(1)
            .take_while(|l| !l.starts_with("//! ```"))
            .map(|l| format!("{}\n", l.trim_start_matches("//!").trim_start()))
            .collect();
        let c = BoardConfig::parse(&example).unwrap();
        assert_eq!(c.port, Some(Some(8883)));
        assert_eq!(c.will.unwrap().qos, 1);
    }

    #[test]
    fn unknown_key_names_its_line() {
        let e = BoardConfig::parse("host = \"a\"\nkeep_alive = 3\n").unwrap_err();
        assert!(e.starts_with("line 2, column 1") && e.contains("keep_alive"), "{e}");
    }

    #[test]
    fn wrong_type_names_its_line() {
        let e = BoardConfig::parse("port = \"eighty\"\n").unwrap_err();
        assert!(e.starts_with("line 1") && e.contains("u16"), "{e}");
    }

    #[test]
    fn every_config_key_is_reachable_from_the_file() {
        let base = BoardConfig::default().client_config().unwrap();
        let (want, settings) = mqtt_host::settings::every_key_changed(&base);
        let text = toml::to_string(&settings).unwrap();
        let got = BoardConfig::parse(&text).unwrap().client_config().unwrap();
        assert_eq!(mqtt_host::settings::differing_keys(&want, &got), Vec::<&str>::new(), "from:\n{text}");
        let tls = got.ssl_params.expect("ssl = true gives TLS parameters");
        assert_eq!(tls.server_name, want.server);
    }

    #[test]
    fn the_board_s_habitual_names_are_aliases() {
        let c = BoardConfig::parse("host = \"h\"\nid = \"i\"\nkeepalive = 9\ntls = true\nv5 = true\n").unwrap();
        let cfg = c.client_config().unwrap();
        assert_eq!((cfg.server.as_str(), cfg.client_id.as_str(), cfg.keepalive_secs, cfg.ssl, cfg.mqttv5), ("h", "i", 9, true, true));
    }

    #[test]
    fn command_line_wins_and_the_file_fills_the_rest() {
        let cli = BoardConfig { server: Some("cli".into()), iface: Some("eth0".into()), ..Default::default() };
        let file = BoardConfig {
            server: Some("file".into()),
            keepalive_secs: Some(7),
            iface: Some("wlan0".into()),
            cafile: Some("ca.pem".into()),
            ..Default::default()
        };
        let c = cli.over(file);
        assert_eq!((c.server.as_deref(), c.keepalive_secs), (Some("cli"), Some(7)));
        assert_eq!((c.iface.as_deref(), c.cafile.as_deref()), (Some("eth0"), Some("ca.pem")));
    }
}
