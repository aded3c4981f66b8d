//! Live overrides of a process's settings (`PATCH /api/script-manager/processes/{id}`):
//! which fields may change at run time, how a request body becomes them, and
//! how they sit on top of the file's settings. Checked by the same rules as
//! the file, so a value the file would refuse is refused here too.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::ProcessConfig;

/// The settings an operator may change without a restart; `None` keeps the file's.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Overrides {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_api_calls_per_minute: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_count: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

/// Overrides in force, with who set them and when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetOverrides {
    #[serde(flatten)]
    pub values: Overrides,
    /// The token's name: `admin`.
    pub set_by: String,
    /// Unix milliseconds.
    pub set_at_ms: i64,
}

impl Overrides {
    /// The fields a PATCH may carry.
    pub const FIELDS: [&'static str; 6] = [
        "interval_seconds",
        "priority",
        "max_api_calls_per_minute",
        "timeout_seconds",
        "retry_count",
        "enabled",
    ];

    /// Reads a PATCH body. `Err((field, message))` names the first field that
    /// is unknown or of the wrong type; ranges are checked by [`Overrides::check`].
    pub fn parse(body: &Value) -> Result<Overrides, (String, String)> {
        let Value::Object(fields) = body else {
            return Err(("body".into(), "must be a JSON object of the fields to change".into()));
        };
        if fields.is_empty() {
            return Err((
                "body".into(),
                format!("names no field; change any of {}", Self::FIELDS.join(", ")),
            ));
        }
        let mut o = Overrides::default();
        for (field, value) in fields {
            let bad = |what: &str| (field.clone(), format!("must be {what}"));
            match field.as_str() {
                "interval_seconds" => {
                    o.interval_seconds = Some(value.as_f64().ok_or_else(|| bad("a number of seconds"))?)
                }
                "timeout_seconds" => {
                    o.timeout_seconds = Some(value.as_f64().ok_or_else(|| bad("a number of seconds"))?)
                }
                "priority" => {
                    let n = value.as_u64().ok_or_else(|| bad("an integer from 1 to 10"))?;
                    o.priority = Some(u8::try_from(n).map_err(|_| bad("an integer from 1 to 10"))?);
                }
                "max_api_calls_per_minute" => {
                    let n = value.as_u64().ok_or_else(|| bad("a non-negative integer"))?;
                    o.max_api_calls_per_minute = Some(u32::try_from(n).map_err(|_| bad("at most 4294967295"))?);
                }
                "retry_count" => {
                    let n = value.as_u64().ok_or_else(|| bad("an integer from 0 to 10"))?;
                    o.retry_count = Some(u32::try_from(n).map_err(|_| bad("an integer from 0 to 10"))?);
                }
                "enabled" => o.enabled = Some(value.as_bool().ok_or_else(|| bad("true or false"))?),
                _ => {
                    return Err((
                        field.clone(),
                        format!(
                            "cannot be changed at run time; change any of {}",
                            Self::FIELDS.join(", ")
                        ),
                    ));
                }
            }
        }
        Ok(o)
    }

    /// These overrides with `newer`'s fields on top (two PATCHes accumulate).
    pub fn and(&self, newer: &Overrides) -> Overrides {
        Overrides {
            interval_seconds: newer.interval_seconds.or(self.interval_seconds),
            priority: newer.priority.or(self.priority),
            max_api_calls_per_minute: newer.max_api_calls_per_minute.or(self.max_api_calls_per_minute),
            timeout_seconds: newer.timeout_seconds.or(self.timeout_seconds),
            retry_count: newer.retry_count.or(self.retry_count),
            enabled: newer.enabled.or(self.enabled),
        }
    }

    /// `file` with these overrides on top.
    pub fn apply(&self, file: &ProcessConfig) -> ProcessConfig {
        let mut p = file.clone();
        p.interval_seconds = self.interval_seconds.unwrap_or(p.interval_seconds);
        p.priority = self.priority.unwrap_or(p.priority);
        p.max_api_calls_per_minute = self.max_api_calls_per_minute.unwrap_or(p.max_api_calls_per_minute);
        p.timeout_seconds = self.timeout_seconds.unwrap_or(p.timeout_seconds);
        p.retry_count = self.retry_count.unwrap_or(p.retry_count);
        p.enabled = self.enabled.unwrap_or(p.enabled);
        p
    }

    /// What the file's rules say of `file` with these overrides on top, as
    /// (field, message) for the overridden fields only.
    pub fn check(&self, id: &str, file: &ProcessConfig) -> Vec<(String, String)> {
        let changed = serde_json::to_value(self).unwrap_or_default();
        let mut found = Vec::new();
        let no_kind_check: super::KindCheck = |_, _| Ok(Vec::new());
        super::validate::check_process(id, &self.apply(file), no_kind_check, &mut |key, message| {
            let field = key.rsplit('.').next().unwrap_or(key).to_string();
            if changed.get(&field).is_some() {
                found.push((field, message));
            }
        });
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_body_names_the_field_it_gets_wrong() {
        let file = super::super::process_defaults("command");
        assert_eq!(
            Overrides::parse(&json!({"interval_seconds": "x"})).unwrap_err().0,
            "interval_seconds"
        );
        assert_eq!(Overrides::parse(&json!({"kind": "x"})).unwrap_err().0, "kind");
        assert_eq!(Overrides::parse(&json!({"priority": 300})).unwrap_err().0, "priority");
        let o = Overrides::parse(&json!({"interval_seconds": -1, "priority": 11, "retry_count": 2})).unwrap();
        let fields: Vec<String> = o.check("job", &file).into_iter().map(|(f, _)| f).collect();
        assert_eq!(fields, ["interval_seconds", "priority"]);
        let o = Overrides::parse(&json!({"interval_seconds": 0.5})).unwrap();
        assert!(o.check("job", &file).is_empty());
        assert_eq!(o.apply(&file).interval_seconds, 0.5);
        let both = o.and(&Overrides::parse(&json!({"enabled": false})).unwrap());
        assert_eq!((both.interval_seconds, both.enabled), (Some(0.5), Some(false)));
    }
}
