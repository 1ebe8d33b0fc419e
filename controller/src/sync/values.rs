//! From remote values to Secret data: a JSON `property` (dotted path), every property of
//! a JSON object (`dataFrom.extract`), and the Go-template subset of ESO templates
//! (`{{ .user }}`, `{{ index . "my-key" }}`, `{{-`/`-}}` trimming). Errors name keys
//! and template text from the spec, never a value.

use std::collections::BTreeMap;

use serde_json::Value;
use zeroize::{Zeroize as _, Zeroizing};

use super::template::{self, RenderError};

/// Secret data being assembled: key → value bytes, wiped when dropped.
pub(crate) type Data = BTreeMap<String, Zeroizing<Vec<u8>>>;

/// Why a value could not be taken from a remote secret.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ValueError {
    /// The property does not exist in the remote secret, or the secret is not JSON.
    PropertyNotFound(String),
    /// The template text cannot be rendered.
    Template(String),
}

fn leaf(value: &Value) -> Zeroizing<Vec<u8>> {
    Zeroizing::new(match value {
        Value::String(text) => text.as_bytes().to_vec(),
        other => other.to_string().into_bytes(),
    })
}

/// A parsed remote value whose strings are wiped when it is dropped.
struct Parsed(Value);

impl Drop for Parsed {
    fn drop(&mut self) {
        fn wipe(value: &mut Value) {
            match value {
                Value::String(text) => text.zeroize(),
                Value::Array(items) => items.iter_mut().for_each(wipe),
                Value::Object(map) => map.values_mut().for_each(wipe),
                _ => {}
            }
        }
        wipe(&mut self.0);
    }
}

fn parse(key: &str, bytes: &[u8]) -> Result<Parsed, ValueError> {
    serde_json::from_slice(bytes).map(Parsed).map_err(|_| {
        ValueError::PropertyNotFound(format!(
            "remote secret `{key}` is not JSON, so it has no properties; drop `property` to take it whole"
        ))
    })
}

fn select<'v>(root: &'v Value, property: &str) -> Option<&'v Value> {
    // A key that itself contains dots wins over a path through nested objects.
    if let Some(found) = root.get(property) {
        return Some(found);
    }
    property
        .split('.')
        .try_fold(root, |node, part| node.get(part))
}

/// The value for one `data[]` entry: the whole remote value, or one JSON property of it.
pub(crate) fn property(
    key: &str,
    bytes: &[u8],
    property: Option<&str>,
) -> Result<Zeroizing<Vec<u8>>, ValueError> {
    let Some(property) = property else {
        return Ok(Zeroizing::new(bytes.to_vec()));
    };
    let root = parse(key, bytes)?;
    select(&root.0, property).map(leaf).ok_or_else(|| {
        ValueError::PropertyNotFound(format!(
            "remote secret `{key}` has no property `{property}`"
        ))
    })
}

/// Every property of a JSON object (optionally of the object at `property`), for
/// `dataFrom[].extract`.
pub(crate) fn extract(key: &str, bytes: &[u8], property: Option<&str>) -> Result<Data, ValueError> {
    let root = parse(key, bytes)?;
    let object = match property {
        Some(p) => select(&root.0, p).ok_or_else(|| {
            ValueError::PropertyNotFound(format!("remote secret `{key}` has no property `{p}`"))
        })?,
        None => &root.0,
    };
    let Value::Object(map) = object else {
        return Err(ValueError::PropertyNotFound(format!(
            "remote secret `{key}` is not a JSON object, so dataFrom.extract cannot split it into keys; use data[] with a secretKey instead"
        )));
    };
    Ok(map.iter().map(|(k, v)| (k.clone(), leaf(v))).collect())
}

/// Renders one template text with `data` (the fetched keys by name) as the dot.
pub(crate) fn render(
    template_key: &str,
    text: &str,
    data: &Data,
) -> Result<Zeroizing<Vec<u8>>, ValueError> {
    let dot = template::dot(data.iter().map(|(k, v)| (k, v.as_slice())));
    template::render(&format!("template.data `{template_key}`"), text, &dot)
        .map(|out| Zeroizing::new(out.into_bytes()))
        .map_err(|err| match err {
            RenderError::MissingKey(name) => ValueError::PropertyNotFound(format!(
                "template.data `{template_key}` uses `{name}`, which is not among the fetched keys ({}); add it to data or dataFrom",
                data.keys().cloned().collect::<Vec<_>>().join(", ")
            )),
            RenderError::Other(message) => ValueError::Template(message),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(bytes: &[u8]) -> &str {
        std::str::from_utf8(bytes).unwrap()
    }

    fn data(pairs: &[(&str, &str)]) -> Data {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Zeroizing::new(v.as_bytes().to_vec())))
            .collect()
    }

    #[test]
    fn property_selects_json_fields_by_dotted_path() {
        let json = br#"{"user":"app","db":{"port":5432,"host":"h"},"a.b":"dotted"}"#;
        assert_eq!(text(&property("k", json, Some("user")).unwrap()), "app");
        assert_eq!(text(&property("k", json, Some("db.port")).unwrap()), "5432");
        assert_eq!(text(&property("k", json, Some("a.b")).unwrap()), "dotted");
        assert_eq!(
            text(&property("k", json, Some("db")).unwrap()),
            r#"{"host":"h","port":5432}"#
        );
        assert!(matches!(
            property("k", json, Some("password")),
            Err(ValueError::PropertyNotFound(m)) if m.contains("`password`")
        ));
    }

    #[test]
    fn a_value_that_is_not_json_is_taken_whole_and_has_no_properties() {
        assert_eq!(
            text(&property("k", b"plain s3cret", None).unwrap()),
            "plain s3cret"
        );
        let err = property("k", b"plain s3cret", Some("x")).unwrap_err();
        assert!(matches!(&err, ValueError::PropertyNotFound(m) if !m.contains("s3cret")));
    }

    #[test]
    fn extract_splits_an_object_into_keys() {
        let got = extract("flags", br#"{"a":"1","b":true,"c":{"d":2}}"#, None).unwrap();
        let got: Vec<(&str, &str)> = got.iter().map(|(k, v)| (k.as_str(), text(v))).collect();
        assert_eq!(got, [("a", "1"), ("b", "true"), ("c", r#"{"d":2}"#)]);
        assert!(extract("flags", br#"["x"]"#, None).is_err());
        let nested = extract("flags", br#"{"c":{"d":"2"}}"#, Some("c")).unwrap();
        assert_eq!(text(&nested["d"]), "2");
    }

    #[test]
    fn templates_render_fetched_keys() {
        let d = data(&[("user", "app"), ("password", "pw"), ("my-key", "x")]);
        let url = render(
            "DATABASE_URL",
            "postgres://{{ .user }}:{{ .password }}@db.team-a.svc:5432/app",
            &d,
        )
        .unwrap();
        assert_eq!(text(&url), "postgres://app:pw@db.team-a.svc:5432/app");
        assert_eq!(
            text(&render("k", r#"a {{- index . "my-key" -}} b"#, &d).unwrap()),
            "axb"
        );
        assert_eq!(text(&render("k", "no actions", &d).unwrap()), "no actions");
    }

    #[test]
    fn template_errors_name_the_key_and_never_a_value() {
        let d = data(&[("password", "pw-value")]);
        let missing = render("URL", "{{ .user }}", &d).unwrap_err();
        assert!(
            matches!(&missing, ValueError::PropertyNotFound(m) if m.contains("`user`") && !m.contains("pw-value"))
        );
        assert!(matches!(
            render("URL", "{{ .password | nosuchfunction }}", &d),
            Err(ValueError::Template(m)) if m.contains("URL") && m.contains("nosuchfunction")
        ));
        assert!(matches!(
            render("URL", "{{ .password ", &d),
            Err(ValueError::Template(_))
        ));
    }
}
