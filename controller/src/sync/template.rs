//! ESO's template engine v2 as its users write it: Go's `text/template` (the `gotmpl`
//! crate: pipes, `if`/`range`/`with`, variables, Go's builtins such as `printf`,
//! `index`, `len`, `eq`, `urlquery`) with the subset of Sprig's functions that ESO's
//! documentation and issues show in use. A missing key is an error, as in ESO, and so
//! is a function not listed here; messages name keys and template text, never a value.

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

use base64::Engine as _;
use gotmpl::{FuncMap, MissingKey, Template, TemplateError, Value};

/// Every function a template may call beyond Go's builtins.
static FUNCTIONS: LazyLock<FuncMap> = LazyLock::new(functions);

/// Why a template did not render.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum RenderError {
    /// It uses a key the dot does not have (named).
    MissingKey(String),
    /// Anything else, in words naming the template.
    Other(String),
}

/// Renders `text` with `data` as the dot. `what` names the template in errors (e.g.
/// `template.data "url"`).
pub(crate) fn render(what: &str, text: &str, data: &Value) -> Result<String, RenderError> {
    let template = Template::new(what)
        .funcs(FUNCTIONS.clone())
        .missing_key(MissingKey::Error)
        .parse(text)
        .map_err(|e| describe(what, &e))?;
    template
        .execute_to_string(data)
        .map_err(|e| describe(what, &e))
}

/// The dot of a data template: every value read, by key, as text (bytes that are not
/// UTF-8 are replaced, as Go's `string` would show them).
pub(crate) fn dot<'a>(values: impl IntoIterator<Item = (&'a String, &'a [u8])>) -> Value {
    let map: BTreeMap<Arc<str>, Value> = values
        .into_iter()
        .map(|(k, v)| {
            (
                Arc::from(k.as_str()),
                Value::String(String::from_utf8_lossy(v).as_ref().into()),
            )
        })
        .collect();
    Value::Map(Arc::new(map))
}

fn describe(what: &str, err: &TemplateError) -> RenderError {
    match err {
        TemplateError::MissingKey { key } => RenderError::MissingKey(key.clone()),
        TemplateError::UndefinedFunction(name) => RenderError::Other(format!(
            "{what}: function `{name}` is not one Sigil's templates have (see the README's list of template functions)"
        )),
        other => RenderError::Other(format!("{what}: {other}")),
    }
}

type Args<'a> = &'a [Value];

fn text(value: &Value) -> String {
    match value {
        Value::Nil => String::new(),
        Value::String(s) => s.to_string(),
        other => other.to_string(),
    }
}

fn arity(name: &str, args: Args<'_>, expected: usize) -> gotmpl::Result<()> {
    if args.len() == expected {
        Ok(())
    } else {
        Err(TemplateError::ArgCount {
            name: name.to_owned(),
            expected,
            got: args.len(),
        })
    }
}

fn fail(name: &str, why: impl std::fmt::Display) -> TemplateError {
    TemplateError::Exec(format!("{name}: {why}"))
}

fn string(s: impl Into<String>) -> Value {
    Value::String(s.into().into())
}

fn int(value: &Value) -> Option<i64> {
    value.as_int().or_else(|| text(value).trim().parse().ok())
}

/// Go's truthiness, as Sprig's `default`, `empty` and `ternary` see it.
fn empty(value: &Value) -> bool {
    !gotmpl::is_true(value)
}

/// A template value as JSON (maps sorted, as Go's encoding/json writes them).
fn to_json(value: &Value) -> serde_json::Value {
    match value {
        Value::Nil => serde_json::Value::Null,
        Value::Bool(b) => (*b).into(),
        Value::Int(i) => (*i).into(),
        Value::Uint(u) => (*u).into(),
        Value::Float(f) => {
            serde_json::Number::from_f64(*f).map_or(serde_json::Value::Null, Into::into)
        }
        Value::String(s) => s.as_ref().into(),
        Value::List(items) => items.iter().map(to_json).collect(),
        Value::Map(map) => map
            .iter()
            .map(|(k, v)| (k.to_string(), to_json(v)))
            .collect::<serde_json::Map<_, _>>()
            .into(),
        other => other.to_string().into(),
    }
}

fn from_json(value: serde_json::Value) -> Value {
    match value {
        serde_json::Value::Null => Value::Nil,
        serde_json::Value::Bool(b) => Value::Bool(b),
        serde_json::Value::Number(n) => n
            .as_i64()
            .map(Value::Int)
            .or_else(|| n.as_u64().map(Value::Uint))
            .unwrap_or_else(|| Value::Float(n.as_f64().unwrap_or(0.0))),
        serde_json::Value::String(s) => string(s),
        serde_json::Value::Array(items) => Value::List(items.into_iter().map(from_json).collect()),
        serde_json::Value::Object(map) => Value::Map(Arc::new(
            map.into_iter()
                .map(|(k, v)| (Arc::from(k.as_str()), from_json(v)))
                .collect(),
        )),
    }
}

fn list(value: &Value) -> Vec<Value> {
    match value {
        Value::List(items) => items.to_vec(),
        Value::Nil => Vec::new(),
        other => vec![other.clone()],
    }
}

fn indent(spaces: usize, s: &str) -> String {
    let pad = " ".repeat(spaces);
    s.split('\n')
        .map(|line| format!("{pad}{line}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn unary(f: fn(&str) -> String) -> impl Fn(Args<'_>) -> gotmpl::Result<Value> {
    move |args| Ok(string(f(&args.last().map(text).unwrap_or_default())))
}

fn b64_decode(
    name: &'static str,
    engine: base64::engine::GeneralPurpose,
) -> impl Fn(Args<'_>) -> gotmpl::Result<Value> {
    move |args| {
        arity(name, args, 1)?;
        let bytes = engine
            .decode(text(&args[0]).trim())
            .map_err(|e| fail(name, format!("not base64: {e}")))?;
        Ok(string(String::from_utf8_lossy(&bytes)))
    }
}

fn digest(
    algorithm: &'static ring::digest::Algorithm,
) -> impl Fn(Args<'_>) -> gotmpl::Result<Value> {
    move |args| {
        let input = args.last().map(text).unwrap_or_default();
        Ok(string(hex::encode(ring::digest::digest(
            algorithm,
            input.as_bytes(),
        ))))
    }
}

fn regex(name: &str, pattern: &Value) -> gotmpl::Result<regex::Regex> {
    regex::Regex::new(&text(pattern)).map_err(|e| fail(name, e))
}

fn functions() -> FuncMap {
    let mut map: BTreeMap<&'static str, gotmpl::ValueFunc> = BTreeMap::new();
    map.insert(
        "b64enc",
        Arc::new(|args: Args<'_>| {
            Ok(string(
                base64::engine::general_purpose::STANDARD
                    .encode(args.last().map(text).unwrap_or_default()),
            ))
        }),
    );
    map.insert(
        "b64dec",
        Arc::new(b64_decode(
            "b64dec",
            base64::engine::general_purpose::STANDARD,
        )),
    );
    map.insert(
        "b64urlenc",
        Arc::new(|args: Args<'_>| {
            Ok(string(
                base64::engine::general_purpose::URL_SAFE
                    .encode(args.last().map(text).unwrap_or_default()),
            ))
        }),
    );
    map.insert(
        "b64urldec",
        Arc::new(b64_decode(
            "b64urldec",
            base64::engine::general_purpose::URL_SAFE,
        )),
    );
    map.insert("upper", Arc::new(unary(|s| s.to_uppercase())));
    map.insert("lower", Arc::new(unary(|s| s.to_lowercase())));
    map.insert("trim", Arc::new(unary(|s| s.trim().to_owned())));
    map.insert(
        "nospace",
        Arc::new(unary(|s| {
            s.chars().filter(|c| !c.is_whitespace()).collect()
        })),
    );
    map.insert(
        "title",
        Arc::new(unary(|s| {
            s.split(' ')
                .map(|w| {
                    let mut chars = w.chars();
                    chars
                        .next()
                        .map_or_else(String::new, |c| c.to_uppercase().chain(chars).collect())
                })
                .collect::<Vec<_>>()
                .join(" ")
        })),
    );
    map.insert("toString", Arc::new(unary(str::to_owned)));
    map.insert("sha256sum", Arc::new(digest(&ring::digest::SHA256)));
    map.insert("sha512sum", Arc::new(digest(&ring::digest::SHA512)));
    map.insert(
        "quote",
        Arc::new(|args: Args<'_>| {
            Ok(string(
                args.iter()
                    .map(|a| format!("{:?}", text(a)))
                    .collect::<Vec<_>>()
                    .join(" "),
            ))
        }),
    );
    map.insert(
        "squote",
        Arc::new(|args: Args<'_>| {
            Ok(string(
                args.iter()
                    .map(|a| format!("'{}'", text(a)))
                    .collect::<Vec<_>>()
                    .join(" "),
            ))
        }),
    );
    map.insert(
        "trimAll",
        Arc::new(|args: Args<'_>| {
            arity("trimAll", args, 2)?;
            let cut: Vec<char> = text(&args[0]).chars().collect();
            Ok(string(text(&args[1]).trim_matches(cut.as_slice())))
        }),
    );
    map.insert(
        "trimPrefix",
        Arc::new(|args: Args<'_>| {
            arity("trimPrefix", args, 2)?;
            let (prefix, s) = (text(&args[0]), text(&args[1]));
            Ok(string(s.strip_prefix(prefix.as_str()).unwrap_or(&s)))
        }),
    );
    map.insert(
        "trimSuffix",
        Arc::new(|args: Args<'_>| {
            arity("trimSuffix", args, 2)?;
            let (suffix, s) = (text(&args[0]), text(&args[1]));
            Ok(string(s.strip_suffix(suffix.as_str()).unwrap_or(&s)))
        }),
    );
    map.insert(
        "contains",
        Arc::new(|args: Args<'_>| {
            arity("contains", args, 2)?;
            Ok(Value::Bool(
                text(&args[1]).contains(text(&args[0]).as_str()),
            ))
        }),
    );
    map.insert(
        "hasPrefix",
        Arc::new(|args: Args<'_>| {
            arity("hasPrefix", args, 2)?;
            Ok(Value::Bool(
                text(&args[1]).starts_with(text(&args[0]).as_str()),
            ))
        }),
    );
    map.insert(
        "hasSuffix",
        Arc::new(|args: Args<'_>| {
            arity("hasSuffix", args, 2)?;
            Ok(Value::Bool(
                text(&args[1]).ends_with(text(&args[0]).as_str()),
            ))
        }),
    );
    map.insert(
        "replace",
        Arc::new(|args: Args<'_>| {
            arity("replace", args, 3)?;
            Ok(string(
                text(&args[2]).replace(text(&args[0]).as_str(), &text(&args[1])),
            ))
        }),
    );
    map.insert(
        "repeat",
        Arc::new(|args: Args<'_>| {
            arity("repeat", args, 2)?;
            let count = int(&args[0])
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| fail("repeat", "the count is not a number"))?;
            Ok(string(text(&args[1]).repeat(count.min(1 << 16))))
        }),
    );
    map.insert(
        "indent",
        Arc::new(|args: Args<'_>| {
            arity("indent", args, 2)?;
            let n = int(&args[0])
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| fail("indent", "the width is not a number"))?;
            Ok(string(indent(n.min(1024), &text(&args[1]))))
        }),
    );
    map.insert(
        "nindent",
        Arc::new(|args: Args<'_>| {
            arity("nindent", args, 2)?;
            let n = int(&args[0])
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| fail("nindent", "the width is not a number"))?;
            Ok(string(format!(
                "\n{}",
                indent(n.min(1024), &text(&args[1]))
            )))
        }),
    );
    map.insert(
        "default",
        Arc::new(|args: Args<'_>| {
            if args.is_empty() || args.len() > 2 {
                return Err(fail("default", "takes a default and a value"));
            }
            Ok(match args.get(1) {
                Some(given) if !empty(given) => given.clone(),
                _ => args[0].clone(),
            })
        }),
    );
    map.insert(
        "empty",
        Arc::new(|args: Args<'_>| {
            arity("empty", args, 1)?;
            Ok(Value::Bool(empty(&args[0])))
        }),
    );
    map.insert(
        "coalesce",
        Arc::new(|args: Args<'_>| {
            Ok(args
                .iter()
                .find(|a| !empty(a))
                .cloned()
                .unwrap_or(Value::Nil))
        }),
    );
    map.insert(
        "ternary",
        Arc::new(|args: Args<'_>| {
            arity("ternary", args, 3)?;
            Ok(if gotmpl::is_true(&args[2]) {
                args[0].clone()
            } else {
                args[1].clone()
            })
        }),
    );
    map.insert(
        "join",
        Arc::new(|args: Args<'_>| {
            arity("join", args, 2)?;
            let sep = text(&args[0]);
            Ok(string(
                list(&args[1])
                    .iter()
                    .map(text)
                    .collect::<Vec<_>>()
                    .join(&sep),
            ))
        }),
    );
    map.insert(
        "splitList",
        Arc::new(|args: Args<'_>| {
            arity("splitList", args, 2)?;
            let sep = text(&args[0]);
            Ok(Value::List(
                text(&args[1]).split(sep.as_str()).map(string).collect(),
            ))
        }),
    );
    // Sprig's `split` gives a map of `_0`, `_1`, …, so that `(split "," .x)._1` works.
    map.insert(
        "split",
        Arc::new(|args: Args<'_>| {
            arity("split", args, 2)?;
            let sep = text(&args[0]);
            Ok(Value::Map(Arc::new(
                text(&args[1])
                    .split(sep.as_str())
                    .enumerate()
                    .map(|(i, part)| (Arc::from(format!("_{i}").as_str()), string(part)))
                    .collect(),
            )))
        }),
    );
    map.insert(
        "list",
        Arc::new(|args: Args<'_>| Ok(Value::List(args.iter().cloned().collect()))),
    );
    map.insert(
        "dict",
        Arc::new(|args: Args<'_>| {
            Ok(Value::Map(Arc::new(
                args.chunks(2)
                    .map(|pair| {
                        (
                            Arc::from(text(&pair[0]).as_str()),
                            pair.get(1).cloned().unwrap_or(Value::Nil),
                        )
                    })
                    .collect(),
            )))
        }),
    );
    map.insert(
        "get",
        Arc::new(|args: Args<'_>| {
            arity("get", args, 2)?;
            let Value::Map(map) = &args[0] else {
                return Err(fail("get", "the first argument is not a map"));
            };
            Ok(map
                .get(text(&args[1]).as_str())
                .cloned()
                .unwrap_or_else(|| string("")))
        }),
    );
    map.insert(
        "hasKey",
        Arc::new(|args: Args<'_>| {
            arity("hasKey", args, 2)?;
            let Value::Map(map) = &args[0] else {
                return Err(fail("hasKey", "the first argument is not a map"));
            };
            Ok(Value::Bool(map.contains_key(text(&args[1]).as_str())))
        }),
    );
    map.insert(
        "keys",
        Arc::new(|args: Args<'_>| {
            let mut keys: Vec<Value> = args
                .iter()
                .filter_map(|a| match a {
                    Value::Map(map) => {
                        Some(map.keys().map(|k| string(k.as_ref())).collect::<Vec<_>>())
                    }
                    _ => None,
                })
                .flatten()
                .collect();
            keys.sort_by_key(text);
            Ok(Value::List(keys.into()))
        }),
    );
    map.insert(
        "toJson",
        Arc::new(|args: Args<'_>| {
            arity("toJson", args, 1)?;
            Ok(string(to_json(&args[0]).to_string()))
        }),
    );
    map.insert(
        "toPrettyJson",
        Arc::new(|args: Args<'_>| {
            arity("toPrettyJson", args, 1)?;
            serde_json::to_string_pretty(&to_json(&args[0]))
                .map(string)
                .map_err(|e| fail("toPrettyJson", e))
        }),
    );
    map.insert(
        "fromJson",
        Arc::new(|args: Args<'_>| {
            arity("fromJson", args, 1)?;
            serde_json::from_str(&text(&args[0]))
                .map(from_json)
                .map_err(|_| fail("fromJson", "the value is not JSON"))
        }),
    );
    map.insert(
        "toYaml",
        Arc::new(|args: Args<'_>| {
            arity("toYaml", args, 1)?;
            serde_saphyr::to_string(&to_json(&args[0]))
                .map(|y| string(y.trim_end()))
                .map_err(|e| fail("toYaml", e))
        }),
    );
    map.insert(
        "fromYaml",
        Arc::new(|args: Args<'_>| {
            arity("fromYaml", args, 1)?;
            serde_saphyr::from_str::<serde_json::Value>(&text(&args[0]))
                .map(from_json)
                .map_err(|_| fail("fromYaml", "the value is not YAML"))
        }),
    );
    map.insert(
        "regexMatch",
        Arc::new(|args: Args<'_>| {
            arity("regexMatch", args, 2)?;
            Ok(Value::Bool(
                regex("regexMatch", &args[0])?.is_match(&text(&args[1])),
            ))
        }),
    );
    map.insert(
        "regexReplaceAll",
        Arc::new(|args: Args<'_>| {
            arity("regexReplaceAll", args, 3)?;
            let re = regex("regexReplaceAll", &args[0])?;
            Ok(string(
                re.replace_all(&text(&args[1]), text(&args[2]).as_str()),
            ))
        }),
    );
    map.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(text: &str) -> Result<String, RenderError> {
        let pairs = [
            ("user".to_owned(), b"app".to_vec()),
            ("password".to_owned(), b"s3cr3t".to_vec()),
            (
                "json".to_owned(),
                br#"{"a":{"b":"deep"},"n":[1,2]}"#.to_vec(),
            ),
            ("b64".to_owned(), b"aGVsbG8=".to_vec()),
            ("csv".to_owned(), b"x,y,z".to_vec()),
        ];
        render(
            "t",
            text,
            &dot(pairs.iter().map(|(k, v)| (k, v.as_slice()))),
        )
    }

    #[test]
    fn eso_templates_as_their_docs_write_them() {
        for (template, want) in [
            ("{{ .user | upper }}", "APP"),
            ("{{ .b64 | b64dec }}", "hello"),
            ("{{ .user | b64enc }}", "YXBw"),
            ("{{ (.json | fromJson).a.b }}", "deep"),
            (
                "{{ .json | fromJson | toJson }}",
                r#"{"a":{"b":"deep"},"n":[1,2]}"#,
            ),
            ("{{ index (.json | fromJson) \"n\" | len }}", "2"),
            ("{{ \"\" | default \"fallback\" }}", "fallback"),
            ("{{ .user | quote }}", "\"app\""),
            ("{{ .user | squote }}", "'app'"),
            ("{{ .csv | replace \",\" \";\" }}", "x;y;z"),
            ("{{ (split \",\" .csv)._1 }}", "y"),
            ("{{ splitList \",\" .csv | join \"-\" }}", "x-y-z"),
            ("{{ \"  pad \" | trim }}", "pad"),
            ("a:{{ .user | nindent 2 }}", "a:\n  app"),
            (
                "{{ printf \"%s:%s\" .user .password | b64enc }}",
                "YXBwOnMzY3IzdA==",
            ),
            ("{{ if eq .user \"app\" }}yes{{ else }}no{{ end }}", "yes"),
            (
                "{{ range $k, $v := (.json | fromJson).a }}{{ $k }}={{ $v }}{{ end }}",
                "b=deep",
            ),
            ("{{ with .user }}{{ . }}{{ end }}", "app"),
            ("{{ \"a b&c/\" | urlquery }}", "a+b%26c%2F"),
            ("{{ dict \"k\" .user | toYaml }}", "k: app"),
            ("{{ (\"k: v\" | fromYaml).k }}", "v"),
        ] {
            assert_eq!(run(template).as_deref(), Ok(want), "{template}");
        }
    }

    #[test]
    fn an_unknown_function_or_key_is_named_and_no_value_is_shown() {
        let Err(RenderError::Other(err)) = run("{{ .password | sha1sum }}") else {
            panic!("sha1sum rendered");
        };
        assert!(err.contains("function `sha1sum`"), "{err}");
        assert!(!err.contains("s3cr3t"));
        assert_eq!(
            run("{{ .nope }}"),
            Err(RenderError::MissingKey("nope".into()))
        );
        let Err(RenderError::Other(err)) = run("{{ .password | b64dec }}") else {
            panic!("not base64, yet decoded");
        };
        assert!(!err.contains("s3cr3t"), "{err}");
    }
}
