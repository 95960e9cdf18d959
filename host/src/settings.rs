//! The one settings schema: every key of the component's config as people write it in a file
//! (a scenario's `[device]` table, the board's `--config` file, your own host's TOML), each
//! optional, laid over the core's defaults.
//!
//! The keys are not listed here: they come from the core's one list,
//! [`mqtt_protocol::with_config_keys`], so a new config key touches the WIT record, the core's
//! `Config` and that list, and every file format has it. A host whose files carry keys of its
//! own (the simulator's `subscribe`, the board's `iface`) declares its struct with
//! [`settings_struct!`], which adds them; [`Settings`] is the plain one.
//!
//! ```
//! let settings: mqtt_host::Settings = toml::from_str("keepalive_s = 30\nclean = false\nmqttv5 = true").unwrap();
//! let mut config = mqtt_host::default_config("broker.local", "sensor-1");
//! settings.apply_to(&mut config).unwrap();
//! assert_eq!((config.keepalive_secs, config.clean, config.mqttv5), (30, false, true));
//! ```

use serde::{Deserialize, Serialize};

use crate::{Config, Will};

/// How a config value is written in a settings file: as itself, except bytes, which are text.
pub trait Setting: Sized {
    type Written: Clone;
    fn from_written(written: Self::Written) -> Self;
    fn to_written(&self) -> Self::Written;
    /// A value unlike `self` (tests use it to change every key).
    fn changed(&self) -> Self;
}

macro_rules! written_as_itself {
    ($($t:ty => |$v:ident| $changed:expr),* $(,)?) => {$(
        impl Setting for $t {
            type Written = $t;
            fn from_written(written: $t) -> $t {
                written
            }
            fn to_written(&self) -> $t {
                self.clone()
            }
            fn changed(&self) -> $t {
                let $v = self;
                $changed
            }
        }
    )*};
}

written_as_itself! {
    bool => |v| !v,
    u16 => |v| v.wrapping_add(7),
    u32 => |v| v.wrapping_add(7),
    u64 => |v| v.wrapping_add(7),
    String => |v| format!("{v}x"),
    Vec<(String, String)> => |v| [v.clone(), vec![("k".to_string(), "v".to_string())]].concat(),
    Vec<String> => |v| [v.clone(), vec!["failover:1884".to_string()]].concat(),
}

/// Passwords and authentication data are bytes in the config, text in a file.
impl Setting for Vec<u8> {
    type Written = String;
    fn from_written(written: String) -> Vec<u8> {
        written.into_bytes()
    }
    fn to_written(&self) -> String {
        String::from_utf8_lossy(self).into_owned()
    }
    fn changed(&self) -> Vec<u8> {
        [self.as_slice(), b"x"].concat()
    }
}

impl<T: Setting + Default> Setting for Option<T> {
    type Written = Option<T::Written>;
    fn from_written(written: Option<T::Written>) -> Option<T> {
        written.map(T::from_written)
    }
    fn to_written(&self) -> Option<T::Written> {
        self.as_ref().map(T::to_written)
    }
    fn changed(&self) -> Option<T> {
        Some(self.as_ref().map_or_else(|| T::default().changed(), T::changed))
    }
}

/// The last will as written: a text payload, QoS 1 unless said, an optional MQTT 5 delay.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WillSetting {
    pub topic: String,
    pub payload: String,
    #[serde(default = "qos_one")]
    pub qos: u8,
    #[serde(default)]
    pub retain: bool,
    /// MQTT 5 Will Delay Interval, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_s: Option<u32>,
}

fn qos_one() -> u8 {
    1
}

impl WillSetting {
    pub fn to_will(&self) -> Result<Will, String> {
        let qos = crate::qos_from_level(self.qos).ok_or_else(|| format!("will.qos = {}: must be 0, 1 or 2", self.qos))?;
        Ok(Will { topic: self.topic.clone(), payload: self.payload.clone().into_bytes(), qos, retain: self.retain, delay_secs: self.delay_s, properties: None })
    }
}

/// Declares a settings struct: every key of the core's list as an optional field (its
/// written name and aliases from the list), the `will`, and the fields given in the
/// brackets. Call it through the list, with `serde` a dependency of the calling crate:
///
/// ```ignore
/// use mqtt_host::settings_struct;
/// mqtt_host::with_config_keys!(settings_struct; pub struct DeviceSettings {
///     /// A key of this host's own.
///     #[serde(default)]
///     pub iface: Option<String>,
/// });
/// ```
///
/// It gets `apply_to` (lay the keys set onto a config), `or` (this one's keys where set, the
/// other's elsewhere) and `from_config` (every key, from a config).
#[macro_export]
macro_rules! settings_struct {
    ([$(#[$smeta:meta])* $vis:vis struct $name:ident { $($(#[$emeta:meta])* $evis:vis $efield:ident : $ety:ty),* $(,)? }]
     $($(#[$meta:meta])* $key:ident : $ty:ty,)*) => {
        $(#[$smeta])*
        #[derive(Debug, Clone, Default, PartialEq, ::serde::Deserialize, ::serde::Serialize)]
        #[serde(deny_unknown_fields)]
        $vis struct $name {
            $(
                $(#[$meta])*
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub $key: Option<<$ty as $crate::settings::Setting>::Written>,
            )*
            /// The last will.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub will: Option<$crate::settings::WillSetting>,
            $($(#[$emeta])* $evis $efield: $ety,)*
        }

        impl $name {
            /// Lays every key set here onto `config`; the rest keep their values.
            pub fn apply_to(&self, config: &mut $crate::Config) -> Result<(), String> {
                $(if let Some(v) = &self.$key {
                    config.$key = $crate::settings::Setting::from_written(v.clone());
                })*
                if let Some(w) = &self.will {
                    config.will = Some(w.to_will()?);
                }
                Ok(())
            }

            /// These keys where set, `other`'s elsewhere (the host's own fields stay these).
            pub fn or(mut self, other: &Self) -> Self {
                $(if self.$key.is_none() {
                    self.$key = other.$key.clone();
                })*
                if self.will.is_none() {
                    self.will = other.will.clone();
                }
                self
            }

            /// Every key, as `config` has it (the will and the host's own fields left unset).
            pub fn from_config(config: &$crate::Config) -> Self {
                Self { $($key: Some($crate::settings::Setting::to_written(&config.$key)),)* ..Self::default() }
            }
        }
    };
}

pub use crate::settings_struct;

mqtt_protocol::with_config_keys!(settings_struct; /// Every config key, each optional: the schema with no host's own keys.
pub struct Settings {});

/// The keys on which two configs differ (the will and TLS parameters aside), by their names in
/// the config.
pub fn differing_keys(a: &Config, b: &Config) -> Vec<&'static str> {
    macro_rules! compare {
        ([] $($(#[$meta:meta])* $key:ident : $ty:ty,)*) => {{
            let mut out = Vec::new();
            $(if a.$key != b.$key {
                out.push(stringify!($key));
            })*
            out
        }};
    }
    mqtt_protocol::with_config_keys!(compare;)
}

/// Whether applying some settings (`apply`: a settings struct's `apply_to`) sets the config
/// key `key`, as `Config` names it: applied over two configs that differ in every key, the
/// results agree on that key only if the settings wrote it. Finds a key whatever name, alias
/// or rename a file gives it, from the schema itself.
pub fn sets_key(apply: impl Fn(&mut Config) -> Result<(), String>, key: &str) -> bool {
    let mut a = default_config("localhost", "device");
    let (mut b, _) = every_key_changed(&a);
    apply(&mut a).is_ok() && apply(&mut b).is_ok() && !differing_keys(&a, &b).contains(&key)
}

/// A config whose every key differs from `base`'s, and the settings that say so; tests use
/// it to prove that every key is reachable from a file.
pub fn every_key_changed(base: &Config) -> (Config, Settings) {
    macro_rules! change {
        ([] $($(#[$meta:meta])* $key:ident : $ty:ty,)*) => {{
            let mut c = base.clone();
            $(c.$key = Setting::changed(&base.$key);)*
            c
        }};
    }
    let changed = mqtt_protocol::with_config_keys!(change;);
    let settings = Settings::from_config(&changed);
    (changed, settings)
}

/// A config with the core's defaults (`mqtt_protocol::Config::default`, so the two never
/// drift apart), for `server` and `client_id`.
pub fn default_config(server: &str, client_id: &str) -> Config {
    mqtt_protocol::Config { client_id: client_id.into(), server: server.into(), ..mqtt_protocol::Config::default() }.into()
}

/// Checks a config by the rules the client's `create` applies (`mqtt_protocol::Config::validate`,
/// the one place they live), without a component: a host can refuse a settings file or a
/// scenario before anything runs, naming the key. TLS parameters are the host's business and
/// are not checked here.
pub fn check(config: &Config) -> Result<(), mqtt_protocol::ConfigError> {
    macro_rules! to_core {
        ([$c:ident] $($(#[$meta:meta])* $key:ident : $ty:ty,)*) => {
            mqtt_protocol::Config { $($key: $c.$key.clone(),)* ..mqtt_protocol::Config::default() }
        };
    }
    let mut core = mqtt_protocol::with_config_keys!(to_core; config);
    core.will = config.will.as_ref().map(|w| mqtt_protocol::Will {
        topic: w.topic.clone(),
        payload: w.payload.clone(),
        qos: match w.qos {
            crate::Qos::AtMostOnce => mqtt_protocol::QoS::AtMostOnce,
            crate::Qos::AtLeastOnce => mqtt_protocol::QoS::AtLeastOnce,
            crate::Qos::ExactlyOnce => mqtt_protocol::QoS::ExactlyOnce,
        },
        retain: w.retain,
        delay_secs: w.delay_secs,
        properties: Default::default(),
    });
    core.validate()
}
