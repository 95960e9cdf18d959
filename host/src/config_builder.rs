//! [`ConfigBuilder`]: a client config from the core's defaults, one setter per key.
//!
//! The setters are generated from the core's one list of config keys
//! ([`mqtt_protocol::with_config_keys`]), as the settings schema is, so a new key has a
//! setter without anyone writing one.

use crate::{Config, TlsParams, Will};

/// What a [`ConfigBuilder`] setter takes for a key of type `T`: the value itself, or a
/// plainer spelling of it (`"text"` for strings, `1883` for an optional port, `b"secret"`
/// for bytes).
pub trait ConfigValue<T> {
    fn into_value(self) -> T;
}

impl<T> ConfigValue<T> for T {
    fn into_value(self) -> T {
        self
    }
}

impl ConfigValue<String> for &str {
    fn into_value(self) -> String {
        self.into()
    }
}

impl ConfigValue<Option<String>> for &str {
    fn into_value(self) -> Option<String> {
        Some(self.into())
    }
}

impl ConfigValue<Option<String>> for String {
    fn into_value(self) -> Option<String> {
        Some(self)
    }
}

impl ConfigValue<Option<u16>> for u16 {
    fn into_value(self) -> Option<u16> {
        Some(self)
    }
}

impl ConfigValue<Option<Vec<u8>>> for &[u8] {
    fn into_value(self) -> Option<Vec<u8>> {
        Some(self.to_vec())
    }
}

impl<const N: usize> ConfigValue<Option<Vec<u8>>> for &[u8; N] {
    fn into_value(self) -> Option<Vec<u8>> {
        Some(self.to_vec())
    }
}

impl ConfigValue<Option<Vec<u8>>> for &str {
    fn into_value(self) -> Option<Vec<u8>> {
        Some(self.as_bytes().to_vec())
    }
}

impl<const N: usize> ConfigValue<Vec<String>> for [&str; N] {
    fn into_value(self) -> Vec<String> {
        self.iter().map(|s| s.to_string()).collect()
    }
}

/// A client config: mqtt_as's defaults (the core's, so nothing is lost), then what you set.
///
/// ```
/// use mqtt_host::ConfigBuilder;
/// let config = ConfigBuilder::new("broker.local", "sensor-1")
///     .port(8883)
///     .keepalive_secs(30)
///     .clean(false)
///     .user("sensor")
///     .password(b"secret")
///     .servers(["backup.local:1883"])
///     .build()
///     .unwrap();
/// assert_eq!((config.port, config.keepalive_secs, config.clean), (Some(8883), 30, false));
/// // A value the client would refuse is an error naming the key, before anything runs.
/// let err = ConfigBuilder::new("broker.local", "sensor-1").keepalive_secs(1).build().unwrap_err();
/// assert!(err.to_string().contains("keepalive"), "{err}");
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct ConfigBuilder {
    config: Config,
}

macro_rules! setters {
    ([] $($(#[doc = $doc:expr])* $(#[serde $serde:tt])* $key:ident : $ty:ty,)*) => {
        impl ConfigBuilder {
            $(
                $(#[doc = $doc])*
                pub fn $key(mut self, value: impl ConfigValue<$ty>) -> Self {
                    self.config.$key = value.into_value();
                    self
                }
            )*
        }
    };
}

mqtt_protocol::with_config_keys!(setters;);

impl ConfigBuilder {
    /// The defaults, for broker `server` and client id `client_id`.
    pub fn new(server: &str, client_id: &str) -> Self {
        ConfigBuilder { config: crate::default_config(server, client_id) }
    }

    /// The last will, published by the broker when the client vanishes.
    pub fn will(mut self, will: Will) -> Self {
        self.config.will = Some(will);
        self
    }

    /// Connect over TLS with these parameters (server name, CA file, client certificate,
    /// ALPN); sets `ssl`, so the default port becomes 8883.
    pub fn tls(mut self, params: TlsParams) -> Self {
        self.config.ssl = true;
        self.config.ssl_params = Some(params);
        self
    }

    /// The config, checked by the rules the client applies when it is created: a value that
    /// cannot work is an error naming its key.
    pub fn build(self) -> Result<Config, mqtt_protocol::ConfigError> {
        crate::settings::check(&self.config)?;
        Ok(self.config)
    }
}
