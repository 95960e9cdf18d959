//! The hosts in other languages (`hosts/python`, `hosts/node`) build the component's `config`
//! record from a list of the core's keys, each with its written name, its other names, its
//! type and its default, kept in `hosts/config_keys.json`. This test makes that list from the
//! core (the same `with_config_keys` list every Rust host uses), so a key added, renamed or
//! given another default there fails here until the file is made again:
//!
//! ```sh
//! MQTT_WRITE_CONFIG_KEYS=1 cargo test --release -p mqtt-host --test host_config_keys
//! ```

use std::path::PathBuf;

fn config_keys_json() -> String {
    // The written name of each key comes from the settings schema itself: settings with
    // only that key set serialize to one entry, under the name files use.
    use mqtt_host::settings::Setting;
    let defaults = mqtt_host::default_config("", "");
    macro_rules! keys {
        ([] $($(#[$meta:meta])* $key:ident : $ty:ty,)*) => {
            vec![$({
                let one = mqtt_host::Settings { $key: Some(Setting::to_written(&defaults.$key)), ..Default::default() };
                let value = serde_json::to_value(one).expect("settings serialize");
                let (name, default) = value.as_object().and_then(|o| o.iter().next()).expect("one key set");
                serde_json::json!({
                    "field": stringify!($key),
                    "name": name,
                    "aliases": aliases(stringify!($(#[$meta])*)),
                    "type": stringify!($ty).replace(' ', ""),
                    "default": default,
                })
            },)*]
        };
    }
    let entries: Vec<serde_json::Value> = mqtt_host::with_config_keys!(keys;);
    let mut text = serde_json::to_string_pretty(&serde_json::json!({
        "about": "Made by host/tests/host_config_keys.rs from the core's config keys; do not edit.",
        "keys": entries,
    }))
    .expect("json");
    text.push('\n');
    text
}

/// The other names a key answers to in a settings file: its `#[serde(alias = "..")]`
/// attributes, as the list spells them (stringified by the macro above).
fn aliases(attributes: &str) -> Vec<String> {
    // stringify! may break the line anywhere between tokens.
    let flat = attributes.split_whitespace().collect::<Vec<_>>().join(" ");
    flat.split("alias = \"").skip(1).filter_map(|rest| rest.split('"').next()).map(str::to_string).collect()
}

#[test]
fn the_other_hosts_config_keys_are_the_cores() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../hosts/config_keys.json");
    let made = config_keys_json();
    if std::env::var_os("MQTT_WRITE_CONFIG_KEYS").is_some() {
        std::fs::write(&path, &made).expect("write config_keys.json");
        return;
    }
    let kept = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        kept == made,
        "{} is not what the core's config keys make: write it again with\n    MQTT_WRITE_CONFIG_KEYS=1 cargo test --release -p mqtt-host --test host_config_keys",
        path.display()
    );
}
