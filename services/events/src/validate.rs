//! Every rule an event of the eye must pass, checked all at once so an error record lists every
//! reason, each with a code, a JSON pointer into the payload and a message.
//!
//! [`check`] runs the rules that need no store: shape, `data` a non-empty object, the timestamp
//! parseable and not in the future, and the `(category, name)` schema. Whether the session is
//! known is the caller's check ([`session_unknown`]), made against the store.
//!
//! The rules judge the parsed payload, but what a valid event keeps of `data` is the client's
//! text: parsing into a [`Value`] would round integers beyond `f64`, drop `19.90`'s zero and
//! sort the keys.

use std::borrow::Cow;
use std::fmt;

use serde::Deserializer;
use serde::de::{self, DeserializeSeed, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::model::{Reason, ValidEvent, refuse};
use crate::schemas::SchemaRegistry;
use crate::time::parse_timestamp;

/// Longest category, name or client event id accepted.
pub const MAX_LABEL_CHARS: usize = 200;

/// An event as received: the text the client sent, and that text parsed for the rules.
pub struct Payload<'a> {
    text: &'a str,
    value: Value,
}

impl<'a> Payload<'a> {
    pub fn parse(text: &'a str) -> serde_json::Result<Self> {
        Ok(Self { text, value: serde_json::from_str(text)? })
    }

    pub fn value(&self) -> &Value {
        &self.value
    }
}

/// What the rules are checked against.
#[derive(Clone, Copy)]
pub struct Rules<'a> {
    /// "Now" for the not-in-the-future rule: when the event was received.
    pub now: i64,
    /// How far ahead of `now` a timestamp may be (client clocks drift).
    pub future_tolerance_ms: i64,
    pub schemas: &'a SchemaRegistry,
    /// Refuse events whose `(category, name)` has no registered schema.
    pub require_schema: bool,
}

/// The session id an event names (`{"session": {"id": ...}}`, or a bare string), if any, in
/// the form the store keeps ([`normalize_session_id`]).
pub fn session_id_of(payload: &Value) -> Option<Cow<'_, str>> {
    let id = match payload.get("session")? {
        Value::String(id) => id,
        session => session.get("id")?.as_str()?,
    };
    Some(normalize_session_id(id))
}

/// A session id as a client may spell it, in the form the store keeps: one that parses as a
/// UUID (any case, braced, without hyphens, `urn:uuid:`) becomes the lowercase hyphenated form,
/// the only one the service creates, as the seed's Django `UUIDField` normalises it; anything
/// else stays as sent (and is then simply unknown).
pub fn normalize_session_id(id: &str) -> Cow<'_, str> {
    // The `uuid` crate takes braces or a URN only around the hyphenated form; Python's `UUID`
    // (behind Django's field) also takes them around the 32 bare digits.
    let urn = "urn:uuid:";
    let inner = match id.get(..urn.len()) {
        Some(prefix) if prefix.eq_ignore_ascii_case(urn) => &id[urn.len()..],
        _ => id,
    };
    let inner = inner.strip_prefix('{').and_then(|braced| braced.strip_suffix('}')).unwrap_or(inner);
    match Uuid::try_parse(inner) {
        Ok(uuid) => {
            let canonical = uuid.hyphenated().to_string();
            if canonical == id { Cow::Borrowed(id) } else { Cow::Owned(canonical) }
        }
        Err(_) => Cow::Borrowed(id),
    }
}

/// The client event id of a payload, if it has a usable one.
pub fn client_event_id_of(payload: &Value) -> Option<&str> {
    payload.get("client_event_id")?.as_str().filter(|id| !id.trim().is_empty() && id.chars().count() <= MAX_LABEL_CHARS)
}

/// The reason for an event whose session the store does not know.
pub fn session_unknown(session_id: &str) -> Reason {
    Reason::new("session_unknown", "/session/id", format!("session {session_id:?} does not exist"))
}

/// Checks every rule that needs no store; all failures are reported, not just the first.
pub fn check(payload: Payload<'_>, rules: &Rules<'_>) -> Result<ValidEvent, Vec<Reason>> {
    let Payload { text, value } = payload;
    let Value::Object(fields) = value else {
        return Err(vec![Reason::new("not_an_object", "", "an event must be a JSON object")]);
    };
    let mut reasons = Vec::new();

    let session_id = match fields.get("session") {
        None | Some(Value::Null) => {
            refuse(&mut reasons, "missing_field", "/session", "session is required, as {\"id\": \"<uuid>\"}")
        }
        Some(Value::String(id)) => session_label(id, "/session", "session", &mut reasons),
        Some(Value::Object(session)) => match session.get("id") {
            None | Some(Value::Null) => refuse(&mut reasons, "missing_field", "/session/id", "session.id is required"),
            Some(Value::String(id)) => session_label(id, "/session/id", "session.id", &mut reasons),
            Some(_) => refuse(&mut reasons, "invalid_type", "/session/id", "session.id must be a string"),
        },
        Some(_) => refuse(&mut reasons, "invalid_type", "/session", "session must be an object {\"id\": \"<uuid>\"}"),
    };
    let category = required_label(&fields, "category", &mut reasons);
    let name = required_label(&fields, "name", &mut reasons);

    let data = match fields.get("data") {
        None | Some(Value::Null) => refuse(&mut reasons, "missing_field", "/data", "data is required"),
        Some(Value::Object(data)) if data.is_empty() => {
            refuse(&mut reasons, "data_empty", "/data", "data must not be empty")
        }
        Some(data @ Value::Object(_)) => Some(data),
        Some(_) => refuse(&mut reasons, "data_not_object", "/data", "data must be a JSON object"),
    };

    let timestamp = match fields.get("timestamp") {
        None | Some(Value::Null) => refuse(&mut reasons, "missing_field", "/timestamp", "timestamp is required"),
        Some(Value::String(text)) => match parse_timestamp(text) {
            Ok(millis) if millis > rules.now.saturating_add(rules.future_tolerance_ms) => refuse(
                &mut reasons,
                "timestamp_in_future",
                "/timestamp",
                format!("timestamp {text:?} is in the future"),
            ),
            Ok(millis) => Some(millis),
            Err(message) => refuse(&mut reasons, "timestamp_invalid", "/timestamp", message),
        },
        Some(_) => refuse(&mut reasons, "invalid_type", "/timestamp", "timestamp must be a string"),
    };

    let client_event_id = match fields.get("client_event_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(id)) => label(id, "/client_event_id", "client_event_id", &mut reasons),
        Some(_) => refuse(&mut reasons, "invalid_type", "/client_event_id", "client_event_id must be a string"),
    };

    if let (Some(category), Some(name), Some(data)) = (&category, &name, data) {
        match rules.schemas.get(category, name) {
            Some(schema) => {
                for violation in schema.violations(data) {
                    reasons.push(Reason {
                        code: "schema_violation".to_owned(),
                        pointer: format!("/data{}", violation.pointer),
                        message: violation.message,
                    });
                }
            }
            None if rules.require_schema => reasons.push(Reason::new(
                "unknown_event_type",
                "/name",
                format!("no schema is registered for category {category:?}, name {name:?}"),
            )),
            None => {}
        }
    }

    match (session_id, category, name, timestamp, data) {
        (Some(session_id), Some(category), Some(name), Some(timestamp), Some(data)) if reasons.is_empty() => {
            // `text` parsed into `fields`, so it has this member; re-serialising is only a
            // fallback that never runs.
            let data = member_text(text, "data")
                .map(RawValue::to_owned)
                .unwrap_or_else(|| serde_json::value::to_raw_value(data).expect("a JSON value serialises"));
            Ok(ValidEvent { session_id, category, name, data, timestamp, client_event_id })
        }
        _ => Err(reasons),
    }
}

/// The text of member `name` of the JSON object `text`, as written; the last one when the
/// object names it twice, as parsing into a [`Value`] keeps the last.
fn member_text<'a>(text: &'a str, name: &str) -> Option<&'a RawValue> {
    struct Member<'n>(&'n str);

    impl<'de> Visitor<'de> for Member<'_> {
        type Value = Option<&'de RawValue>;

        fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
            formatter.write_str("a JSON object")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut found = None;
            while let Some(is_member) = map.next_key_seed(IsKey(self.0))? {
                let value: &'de RawValue = map.next_value()?;
                if is_member {
                    found = Some(value);
                }
            }
            Ok(found)
        }
    }

    /// Whether a key (unescaped) is the one sought, without allocating it.
    struct IsKey<'n>(&'n str);

    impl<'de> DeserializeSeed<'de> for IsKey<'_> {
        type Value = bool;

        fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
            deserializer.deserialize_str(self)
        }
    }

    impl Visitor<'_> for IsKey<'_> {
        type Value = bool;

        fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
            formatter.write_str("an object key")
        }

        fn visit_str<E: de::Error>(self, key: &str) -> Result<bool, E> {
            Ok(key == self.0)
        }
    }

    serde_json::Deserializer::from_str(text).deserialize_map(Member(name)).ok().flatten()
}

fn required_label(fields: &Map<String, Value>, field: &str, reasons: &mut Vec<Reason>) -> Option<String> {
    let pointer = format!("/{field}");
    match fields.get(field) {
        None | Some(Value::Null) => refuse(reasons, "missing_field", &pointer, format!("{field} is required")),
        Some(Value::String(text)) => label(text, &pointer, field, reasons),
        Some(_) => refuse(reasons, "invalid_type", &pointer, format!("{field} must be a string")),
    }
}

/// A session id that passes [`label`], normalised.
fn session_label(text: &str, pointer: &str, field: &str, reasons: &mut Vec<Reason>) -> Option<String> {
    label(text, pointer, field, reasons).map(|id| normalize_session_id(&id).into_owned())
}

/// A non-blank string of at most [`MAX_LABEL_CHARS`], kept as sent.
fn label(text: &str, pointer: &str, field: &str, reasons: &mut Vec<Reason>) -> Option<String> {
    if text.trim().is_empty() {
        refuse(reasons, "blank", pointer, format!("{field} must not be blank"))
    } else if text.chars().count() > MAX_LABEL_CHARS {
        refuse(reasons, "too_long", pointer, format!("{field} is longer than {MAX_LABEL_CHARS} characters"))
    } else {
        Some(text.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn registry() -> SchemaRegistry {
        SchemaRegistry::with_built_ins()
    }

    /// `check` on the text of `payload`.
    fn check(payload: Value, rules: &Rules<'_>) -> Result<ValidEvent, Vec<Reason>> {
        let text = payload.to_string();
        super::check(Payload::parse(&text).unwrap(), rules)
    }

    fn codes(result: Result<ValidEvent, Vec<Reason>>) -> Vec<(String, String)> {
        let mut codes: Vec<_> = result.unwrap_err().into_iter().map(|r| (r.code, r.pointer)).collect();
        codes.sort();
        codes
    }

    #[test]
    fn the_seed_example_passes() {
        let schemas = registry();
        let rules =
            Rules { now: shared::now_millis(), future_tolerance_ms: 0, schemas: &schemas, require_schema: true };
        let event = check(
            json!({"session": {"id": "9ab1b579-7021-4e0c-8ea1-2ac9f52f3058"}, "category": "page interaction",
                    "name": "pageview", "data": {"host": "www.consumeraffairs.com", "path": "/"},
                    "timestamp": "2021-06-15 00:00:00"}),
            &rules,
        )
        .unwrap();
        assert_eq!(event.session_id, "9ab1b579-7021-4e0c-8ea1-2ac9f52f3058");
        assert_eq!(event.timestamp, 1_623_715_200_000);
    }

    #[test]
    fn every_failure_is_reported() {
        let schemas = registry();
        let rules = Rules { now: 1_623_715_200_000, future_tolerance_ms: 0, schemas: &schemas, require_schema: false };
        assert_eq!(
            codes(check(json!({"session": {}, "category": "", "name": 5, "data": {}, "timestamp": "soon"}), &rules)),
            [
                ("blank".into(), "/category".into()),
                ("data_empty".into(), "/data".into()),
                ("invalid_type".into(), "/name".into()),
                ("missing_field".into(), "/session/id".into()),
                ("timestamp_invalid".into(), "/timestamp".into()),
            ]
        );
        assert_eq!(
            codes(check(
                json!({"session": {"id": "s"}, "category": "page interaction", "name": "pageview",
                        "data": {"host": "h"}, "timestamp": "2021-06-16T00:00:00Z"}),
                &rules
            )),
            [("schema_violation".into(), "/data/path".into()), ("timestamp_in_future".into(), "/timestamp".into())]
        );
        assert_eq!(codes(check(json!([1]), &rules)), [("not_an_object".into(), "".into())]);
    }

    #[test]
    fn session_ids_that_are_uuids_take_the_lowercase_hyphenated_form() {
        let canonical = "775c02ec-8f3a-4b1e-9c7d-2a1b3c4d5e6f";
        for spelling in [
            canonical,
            "775C02EC-8F3A-4B1E-9C7D-2A1B3C4D5E6F",
            "{775c02ec-8f3a-4b1e-9c7d-2a1b3c4d5e6f}",
            "775C02EC8F3A4B1E9C7D2A1B3C4D5E6F",
            "{775C02EC8F3A4B1E9C7D2A1B3C4D5E6F}",
            "urn:uuid:775c02ec-8f3a-4b1e-9c7d-2a1b3c4d5e6f",
            "URN:UUID:775C02EC8F3A4B1E9C7D2A1B3C4D5E6F",
        ] {
            assert_eq!(normalize_session_id(spelling), canonical, "{spelling}");
        }
        for other in [
            "s1",
            "775c02ec-8f3a-4b1e-9c7d-2a1b3c4d5e6f  ",
            "775c02ec-8f3a-4b1e-9c7d-2a1b3c4d5e6",
            "775c02ec8f3a-4b1e-9c7d-2a1b3c4d5e6f",
            "{775c02ec-8f3a-4b1e-9c7d-2a1b3c4d5e6f",
            "urn:uuid:",
            "{}",
        ] {
            assert_eq!(normalize_session_id(other), other);
        }
        let schemas = registry();
        let rules = Rules { now: i64::MAX, future_tolerance_ms: 0, schemas: &schemas, require_schema: false };
        let event = json!({"session": {"id": "775C02EC-8F3A-4B1E-9C7D-2A1B3C4D5E6F"}, "category": "c", "name": "n",
                           "data": {"k": 1}, "timestamp": "2021-01-01"});
        assert_eq!(session_id_of(&event).as_deref(), Some(canonical));
        assert_eq!(check(event, &rules).unwrap().session_id, canonical);
    }

    #[test]
    fn unknown_types_pass_unless_schemas_are_required() {
        let schemas = registry();
        let mut rules = Rules { now: i64::MAX, future_tolerance_ms: 0, schemas: &schemas, require_schema: false };
        let event = json!({"session": "s", "category": "c", "name": "n", "data": {"k": 1}, "timestamp": "2021-01-01"});
        assert!(check(event.clone(), &rules).is_ok());
        rules.require_schema = true;
        assert_eq!(codes(check(event.clone(), &rules)), [("unknown_event_type".into(), "/name".into())]);
    }

    #[test]
    fn a_valid_events_data_is_the_text_sent() {
        let schemas = registry();
        let rules = Rules { now: i64::MAX, future_tolerance_ms: 0, schemas: &schemas, require_schema: false };
        let text = r#"{"session": "s", "data": {"zeta": 1, "n": 123456789012345678901234567890, "price": 19.90},
                       "category": "c", "name": "n", "timestamp": "2021-01-01"}"#;
        let event = super::check(Payload::parse(text).unwrap(), &rules).unwrap();
        assert_eq!(event.data.get(), r#"{"zeta": 1, "n": 123456789012345678901234567890, "price": 19.90}"#);
    }

    #[test]
    fn the_member_found_is_the_top_level_one_the_parse_keeps() {
        let text = r#"{"x": {"data": 1}, "d\u0061ta": {"a": 1}, "data" : {"b": 2.0}}"#;
        assert_eq!(member_text(text, "data").map(RawValue::get), Some(r#"{"b": 2.0}"#));
        assert_eq!(serde_json::from_str::<Value>(text).unwrap()["data"], json!({"b": 2.0}));
        assert_eq!(member_text(r#"{"d\u0061ta": [1]}"#, "data").map(RawValue::get), Some("[1]"));
        assert!(member_text(r#"{"x": {"data": 1}}"#, "data").is_none());
        assert!(member_text("[1]", "data").is_none());
    }
}
