//! From remote values to Secret data: a JSON `property` (dotted path), every property of
//! a JSON object (`dataFrom.extract`), and the Go-template subset of ESO templates
//! (`{{ .user }}`, `{{ index . "my-key" }}`, `{{-`/`-}}` trimming). Errors name keys
//! and template text from the spec, never a value.

use std::collections::BTreeMap;

use serde_json::Value;
use zeroize::{Zeroize as _, Zeroizing};

use sigil_types::{ConversionStrategy, DecodingStrategy, Rewrite};

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
    /// The keys cannot become a Secret's keys as asked (a rewrite or conversion makes
    /// two keys one, or leaves a key the API server refuses), or a value does not decode.
    Keys(String),
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

/// The keys one `dataFrom` entry yielded, renamed by its rewrites in order, converted
/// (`Default` unless the entry says otherwise, as ESO's CRD defaults it) and decoded.
/// Two keys made one, or a key no Secret may hold, are refused naming them: ESO keeps
/// whichever its map iteration met last.
pub(crate) fn shape_keys(
    entry: &str,
    data: Data,
    rewrites: &[Rewrite],
    conversion: Option<ConversionStrategy>,
    decoding: Option<DecodingStrategy>,
) -> Result<Data, ValueError> {
    let mut data = data;
    for (i, step) in rewrites.iter().enumerate() {
        let rename = |key: &str| rewritten(entry, i, step, key);
        data = rename_all(entry, data, rename)?;
    }
    let conversion = conversion.unwrap_or_default();
    data = rename_all(entry, data, |key| Ok(convert(key, conversion)))?;
    let decoding = decoding.unwrap_or_default();
    let mut shaped = Data::new();
    for (key, value) in data {
        if !is_secret_key(&key) {
            return Err(ValueError::Keys(format!(
                "{entry}: `{key}` is not a valid Secret key (letters, digits, `-`, `_` and `.`, at most 253); rename it with rewrite or conversionStrategy"
            )));
        }
        let value = decode(entry, &key, value, decoding)?;
        shaped.insert(key, value);
    }
    Ok(shaped)
}

/// Renames every key of `data`; two keys renamed to one are an error naming both.
fn rename_all(
    entry: &str,
    data: Data,
    rename: impl Fn(&str) -> Result<String, ValueError>,
) -> Result<Data, ValueError> {
    let mut renamed = Data::new();
    let mut from: BTreeMap<String, String> = BTreeMap::new();
    for (key, value) in data {
        let new = rename(&key)?;
        if let Some(earlier) = from.get(&new) {
            return Err(ValueError::Keys(format!(
                "{entry}: `{earlier}` and `{key}` both become Secret key `{new}`; change the rewrite (or the keys) so that each key is written once"
            )));
        }
        from.insert(new.clone(), key);
        renamed.insert(new, value);
    }
    Ok(renamed)
}

fn rewritten(entry: &str, i: usize, step: &Rewrite, key: &str) -> Result<String, ValueError> {
    if let Some(r) = &step.regexp {
        let re = regex::Regex::new(&r.source)
            .map_err(|e| ValueError::Keys(format!("{entry}: rewrite[{i}].regexp.source: {e}")))?;
        return Ok(re.replace_all(key, r.target.as_str()).into_owned());
    }
    if let Some(t) = &step.transform {
        let dot = template::dot([(&"value".to_owned(), key.as_bytes())]);
        return template::render(&format!("{entry}: rewrite[{i}].transform"), &t.template, &dot)
            .map_err(|e| match e {
                RenderError::MissingKey(name) => ValueError::Keys(format!(
                    "{entry}: rewrite[{i}].transform uses `{name}`; a transform has only `.value`, the key"
                )),
                RenderError::Other(message) => ValueError::Keys(message),
            });
    }
    Ok(key.to_owned())
}

/// A key with every character a Secret key cannot hold replaced, as ESO converts.
pub(crate) fn convert(key: &str, strategy: ConversionStrategy) -> String {
    key.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-._".contains(c) {
                c.to_string()
            } else {
                match strategy {
                    ConversionStrategy::Default => "_".to_owned(),
                    ConversionStrategy::Unicode => format!("_U{:04x}_", u32::from(c)),
                }
            }
        })
        .collect()
}

fn is_secret_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 253
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c))
}

/// A value decoded as asked; the error names the key, never the value.
pub(crate) fn decode(
    entry: &str,
    key: &str,
    value: Zeroizing<Vec<u8>>,
    strategy: DecodingStrategy,
) -> Result<Zeroizing<Vec<u8>>, ValueError> {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE};
    let decoded = match strategy {
        DecodingStrategy::None => return Ok(value),
        DecodingStrategy::Base64 => STANDARD.decode(value.as_slice()),
        DecodingStrategy::Base64Url => URL_SAFE.decode(value.as_slice()),
        DecodingStrategy::Auto => {
            match STANDARD
                .decode(value.as_slice())
                .or_else(|_| URL_SAFE.decode(value.as_slice()))
            {
                Ok(decoded) => Ok(decoded),
                Err(_) => return Ok(value),
            }
        }
    };
    decoded.map(Zeroizing::new).map_err(|_| {
        ValueError::Keys(format!(
            "{entry}: the value of `{key}` is not {} as decodingStrategy says; fix the value or the strategy",
            match strategy {
                DecodingStrategy::Base64Url => "URL-safe base64",
                _ => "base64",
            }
        ))
    })
}

/// Renders one `template.data` text with `data` (the fetched keys by name) as the dot.
pub(crate) fn render(
    template_key: &str,
    text: &str,
    data: &Data,
) -> Result<Zeroizing<Vec<u8>>, ValueError> {
    render_as(&format!("template.data `{template_key}`"), text, data)
}

/// Renders one template text, named `what` in errors, with `data` as the dot.
pub(crate) fn render_as(
    what: &str,
    text: &str,
    data: &Data,
) -> Result<Zeroizing<Vec<u8>>, ValueError> {
    let dot = template::dot(data.iter().map(|(k, v)| (k, v.as_slice())));
    template::render(what, text, &dot)
        .map(|out| Zeroizing::new(out.into_bytes()))
        .map_err(|err| match err {
            RenderError::MissingKey(name) => ValueError::PropertyNotFound(format!(
                "{what} uses `{name}`, which is not among the fetched keys ({}); add it to data or dataFrom",
                data.keys().cloned().collect::<Vec<_>>().join(", ")
            )),
            RenderError::Other(message) => ValueError::Template(message),
        })
}

/// The `key: value` lines a `KeysAndValues` template rendered; the error names the
/// template, never its output.
pub(crate) fn keys_and_values(what: &str, rendered: &[u8]) -> Result<Data, ValueError> {
    let text = std::str::from_utf8(rendered)
        .map_err(|_| ValueError::Template(format!("{what}: the output is not UTF-8 text")))?;
    let map: BTreeMap<String, serde_json::Value> = serde_saphyr::from_str(text).map_err(|_| {
        ValueError::Template(format!(
            "{what}: templateAs KeysAndValues needs the output to be YAML `key: value` lines"
        ))
    })?;
    Ok(map.into_iter().map(|(k, v)| (k, leaf(&v))).collect())
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
    fn keys_are_rewritten_in_order_then_converted_and_values_decoded() {
        use sigil_types::{RewriteRegexp, RewriteTransform};
        let found = data(&[("team/app/db", "aGk="), ("team/app/api", "eW8=")]);
        let rewrites = [
            Rewrite {
                regexp: Some(RewriteRegexp {
                    source: "^team/(.*)$".into(),
                    target: "$1".into(),
                }),
                transform: None,
            },
            Rewrite {
                regexp: None,
                transform: Some(RewriteTransform {
                    template: "{{ .value | upper }}".into(),
                }),
            },
        ];
        let shaped = shape_keys(
            "dataFrom[0]",
            found,
            &rewrites,
            None,
            Some(DecodingStrategy::Base64),
        )
        .unwrap();
        let got: Vec<(&str, &str)> = shaped.iter().map(|(k, v)| (k.as_str(), text(v))).collect();
        assert_eq!(got, [("APP_API", "yo"), ("APP_DB", "hi")]);
        assert_eq!(
            convert("a/b c", ConversionStrategy::Unicode),
            "a_U002f_b_U0020_c"
        );
    }

    #[test]
    fn two_keys_made_one_are_refused_naming_both() {
        let found = data(&[("a/x", "1"), ("b/x", "2")]);
        let strip = [Rewrite {
            regexp: Some(sigil_types::RewriteRegexp {
                source: "^.*/".into(),
                target: String::new(),
            }),
            transform: None,
        }];
        let err = shape_keys("dataFrom[1]", found, &strip, None, None).unwrap_err();
        assert!(
            matches!(&err, ValueError::Keys(m) if m.contains("`a/x` and `b/x` both become Secret key `x`")),
            "{err:?}"
        );
        let err = shape_keys(
            "dataFrom[0]",
            data(&[("k", "%%%")]),
            &[],
            None,
            Some(DecodingStrategy::Base64),
        )
        .unwrap_err();
        assert!(matches!(&err, ValueError::Keys(m) if m.contains("`k`") && !m.contains("%%%")));
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
