//! A scenario written out as the file a person would write: the keys that differ from the
//! defaults, in the schema's order, so that a shrunk file reads like the library's.

use crate::scenario::Scenario;

/// The scenario as TOML that [`Scenario::parse`] reads back to the same scenario.
pub fn to_toml(sc: &Scenario) -> String {
    let mut value = to_value(sc);
    prune(&mut value, &defaults(), true);
    toml::to_string(&value).unwrap_or_else(|e| format!("# could not write the scenario: {e}\n"))
}

/// The scenario as a TOML value (the shrinker edits this form).
pub fn to_value(sc: &Scenario) -> toml::Value {
    // Every field of the schema is a TOML type; a failure here is a bug in the schema.
    toml::Value::try_from(sc).unwrap_or_else(|_| toml::Value::Table(toml::Table::new()))
}

/// What a file with nothing but `duration_s` means: the defaults to leave out.
fn defaults() -> toml::Value {
    let plain = Scenario::parse("duration_s = 1\n").expect("the minimal scenario parses");
    to_value(&plain)
}

/// Drops every key of `value` equal to the default's, and tables left empty. `duration_s`
/// and `seeds` stay: the one is required, the other is what makes the file replay.
fn prune(value: &mut toml::Value, default: &toml::Value, top: bool) {
    let (Some(table), Some(default)) = (value.as_table_mut(), default.as_table()) else { return };
    let keys: Vec<String> = table.keys().cloned().collect();
    for key in keys {
        if top && (key == "duration_s" || key == "seeds") {
            continue;
        }
        let Some(d) = default.get(&key) else { continue };
        let v = table.get_mut(&key).expect("key listed");
        if v.is_table() {
            prune(v, d, false);
            if v.as_table().is_some_and(toml::Table::is_empty) {
                table.remove(&key);
            }
        } else if v == d {
            table.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_library_scenario_survives_the_round_trip() {
        for name in ["wifi-dropout", "qos2-exactly-once-across-reboot", "v5-retain-handling-skips-stale", "broker-failover"] {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios").join(format!("{name}.toml"));
            let sc = Scenario::load(&path).unwrap();
            let text = to_toml(&sc);
            let back = Scenario::parse(&text).unwrap_or_else(|e| panic!("{name}: {}\n{text}", e.0));
            assert_eq!(to_value(&back), to_value(&sc), "{name}:\n{text}");
            assert!(!text.contains("tick_ms"), "defaults are left out:\n{text}");
        }
    }
}
