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

/// A setting the board cannot use: the key at fault (`keepalive_secs`, `will.qos`, `cert`),
/// to find where it was given, and why (naming it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub key: String,
    pub why: String,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.why)
    }
}

impl std::error::Error for Refused {}

/// A `--config` file as read: its settings, and its text to place a refused key in.
#[derive(Debug, Clone, Default)]
pub struct ConfigFile {
    pub path: std::path::PathBuf,
    pub text: String,
    pub settings: BoardConfig,
}

impl ConfigFile {
    pub fn load(path: &std::path::Path) -> Result<ConfigFile, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let settings = BoardConfig::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(ConfigFile { path: path.to_path_buf(), text, settings })
    }

    /// `refused`, placed at the line that gives the key at fault, if this file gave it and
    /// the command line (`cli`, which wins) did not.
    pub fn place(&self, cli: &BoardConfig, refused: &Refused) -> String {
        if self.settings.sets(&refused.key) && !cli.sets(&refused.key) {
            let at = mqtt_host::source_position::describe_key(&self.text, &refused.key, &refused.why);
            format!("--config {}: {at}", self.path.display())
        } else {
            refused.why.clone()
        }
    }
}

impl BoardConfig {
    pub fn parse(text: &str) -> Result<BoardConfig, String> {
        let c: BoardConfig = toml::from_str(text).map_err(|e| match e.span() {
            Some(span) => mqtt_host::source_position::describe(text, span.start, e.message()),
            None => e.message().to_string(),
        })?;
        if let Some(w) = &c.will {
            w.to_will().map_err(|why| mqtt_host::source_position::describe_key(text, "will.qos", &why))?;
        }
        Ok(c)
    }

    /// Whether these settings give `key` (a config key as `Config` names it, or `will.qos`,
    /// `cert`, `key`), whatever name they give it under.
    pub fn sets(&self, key: &str) -> bool {
        match key {
            "cert" => self.cert.is_some(),
            "key" => self.key.is_some(),
            k if k.starts_with("will") => self.will.is_some(),
            k => mqtt_host::settings::sets_key(|c| self.apply_to(c), k),
        }
    }

    /// The component config: the client's defaults (server `localhost`, id
    /// `mqtt-board-<pid>`), these keys over them, and TLS when any TLS setting asks for it;
    /// refused, naming the key, if the client would refuse it.
    pub fn client_config(&self) -> Result<Config, Refused> {
        let mut cfg = default_config("localhost", &format!("mqtt-board-{}", std::process::id()));
        cfg.seed = u64::from(std::process::id());
        // (`apply_to` refuses only a will's QoS.)
        self.apply_to(&mut cfg).map_err(|why| Refused { key: "will.qos".into(), why })?;
        // The board's `clean` is the session for the whole run: the first connection too,
        // unless `clean_init` says otherwise.
        if self.clean_init.is_none() {
            cfg.clean_init = cfg.clean;
        }
        if cfg.ssl || self.insecure == Some(true) || self.cafile.is_some() || self.cert.is_some() || self.alpn.is_some() {
            if self.cert.is_some() != self.key.is_some() {
                let given = if self.cert.is_some() { "cert" } else { "key" };
                return Err(Refused { key: given.into(), why: "a client certificate needs both --cert and --key".into() });
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
        mqtt_host::settings::check(&cfg).map_err(|e| Refused { key: e.key.into(), why: e.message() })?;
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
        let c = BoardConfig::parse("host = \"h\"\nid = \"i\"\nkeepalive = 90\ntls = true\nv5 = true\n").unwrap();
        let cfg = c.client_config().unwrap();
        assert_eq!((cfg.server.as_str(), cfg.client_id.as_str(), cfg.keepalive_secs, cfg.ssl, cfg.mqttv5), ("h", "i", 90, true, true));
    }

    fn file(text: &str) -> ConfigFile {
        ConfigFile { path: "board.toml".into(), text: text.into(), settings: BoardConfig::parse(text).unwrap() }
    }

    /// A value the client refuses is reported at the line of the file that gave it, under
    /// whatever name the file used, unless the command line gave it instead.
    #[test]
    fn a_refused_value_is_placed_at_its_line_in_the_file() {
        let f = file("host = \"b\"\nkeepalive = 1\n");
        let refused = f.settings.client_config().unwrap_err();
        assert_eq!(refused.key, "keepalive_secs");
        let e = f.place(&BoardConfig::default(), &refused);
        assert!(e.starts_with("--config board.toml: line 2, column 1: config key `keepalive_secs`"), "{e}");
        assert!(e.ends_with("2 | keepalive = 1"), "{e}");
        // Given on the command line, it is not the file's.
        let cli = BoardConfig { keepalive_secs: Some(1), ..Default::default() };
        let refused = cli.clone().over(f.settings.clone()).client_config().unwrap_err();
        assert_eq!(f.place(&cli, &refused), refused.why);

        let f = file("id = \"\"\nclean = false\n");
        let e = f.place(&BoardConfig::default(), &f.settings.client_config().unwrap_err());
        assert!(e.starts_with("--config board.toml: line 1, column 1: config key `client_id`"), "{e}");
        let f = file("host = \"b\"\ncert = \"c.pem\"\n");
        let e = f.place(&BoardConfig::default(), &f.settings.client_config().unwrap_err());
        assert!(e.starts_with("--config board.toml: line 2, column 1: a client certificate"), "{e}");
    }

    #[test]
    fn a_will_qos_out_of_range_names_its_line() {
        let e = BoardConfig::parse("host = \"b\"\nwill = { topic = \"t\", payload = \"p\", qos = 5 }\n").unwrap_err();
        assert!(e.starts_with("line 2, column 38: will.qos = 5"), "{e}");
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
