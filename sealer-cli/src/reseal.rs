//! `sigil reseal`: SealedSecrets re-sealed to the cluster's newest key through
//! sigil-api, written as `sigil seal` writes (stdout, `-w FILE`, or a directory into
//! `-w DIR`), keys sorted, each file in the format it was read in.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::api::{self, Api, Call};
use crate::cli::{Format, ResealArgs};
use crate::cluster;
use crate::document::{self, Document};
use crate::failure::{Failure, fail};
use crate::output;

/// One input file: its documents, the format to write them in, and where.
struct File {
    source: String,
    documents: Vec<Document>,
    format: Format,
    out: Option<PathBuf>,
}

fn read(path: &Path, out: Option<PathBuf>) -> anyhow::Result<File> {
    let document::SealedManifests {
        source,
        text,
        documents,
    } = document::read_sealed_manifests(path)?;
    for doc in &documents {
        doc.sealed_secret_name("sigil reseal")?;
    }
    let format = if document::looks_like_json(&text) {
        Format::Json
    } else {
        Format::Yaml
    };
    Ok(File {
        source,
        documents,
        format,
        out,
    })
}

/// Every file to re-seal, with where it goes; all are read and checked before
/// anything is sent, so one bad file costs no requests.
fn inputs(args: &ResealArgs) -> anyhow::Result<Vec<File>> {
    if !args.input.is_dir() {
        return Ok(vec![read(&args.input, args.out.clone())?]);
    }
    let Some(out_dir) = &args.out else {
        return fail(
            format!(
                "{} is a directory, and no -w OUTDIR was given",
                args.input.display()
            ),
            format!(
                "pass -w OUTDIR: each file is re-sealed into the same relative path under OUTDIR (-w {} re-seals in place)",
                args.input.display()
            ),
        );
    };
    let files = document::manifest_files_in(&args.input, "SealedSecret")?;
    files
        .into_iter()
        .map(|relative| read(&args.input.join(&relative), Some(out_dir.join(relative))))
        .collect()
}

/// Takes the re-sealed values into the document, leaving every other field as it was.
fn take_values(
    doc: &mut Document,
    resealed: &Value,
    object: &dyn std::fmt::Display,
) -> anyhow::Result<()> {
    let unexpected = |what: &str| -> anyhow::Error {
        Failure::new(format!(
            "{}: sigil-api answered for {object} with {what}",
            doc.origin
        ))
        .with_hint("check that sigil and sigil-api are the same version (`sigil --version`)")
        .into()
    };
    let Some(new) = resealed
        .pointer("/spec/encryptedData")
        .and_then(Value::as_object)
    else {
        return Err(unexpected("no spec.encryptedData"));
    };
    let Some(old) = doc
        .value
        .pointer_mut("/spec/encryptedData")
        .and_then(Value::as_object_mut)
    else {
        return Err(unexpected("a document that has no spec.encryptedData"));
    };
    if !old.keys().eq(new.keys()) {
        let keys = |map: &serde_json::Map<String, Value>| {
            map.keys().cloned().collect::<Vec<_>>().join(", ")
        };
        return Err(unexpected(&format!(
            "keys {} where the file has {}",
            keys(new),
            keys(old)
        )));
    }
    for (key, value) in new {
        old.insert(key.clone(), value.clone());
    }
    Ok(())
}

pub(crate) fn run(args: &ResealArgs) -> anyhow::Result<()> {
    let base = api::server(&args.api)?;
    let mut files = inputs(args)?;
    cluster::block_on(async {
        let api = Api::connect(&args.api, base)?;
        for file in &mut files {
            for doc in &mut file.documents {
                let object = doc.sealed_secret_name("sigil reseal")?;
                let call = Call::reseal(&object, &doc.value)?;
                let resealed: Value = api
                    .send(&call)
                    .await
                    .map_err(|err| err.context(format!("{}: {object}", doc.origin)))?
                    .body;
                take_values(doc, &resealed, &object)?;
            }
        }
        Ok(())
    })?;
    // Rendered in full before any write, so a failure leaves every file as it was.
    let mut outputs = Vec::with_capacity(files.len());
    for file in &files {
        let values: Vec<Value> = file.documents.iter().map(|d| d.value.clone()).collect();
        outputs.push((file, output::render(&values, file.format)?));
    }
    let objects: usize = files.iter().map(|f| f.documents.len()).sum();
    for (file, text) in &outputs {
        output::emit(file.out.as_deref(), text)?;
    }
    match (&args.out, files.as_slice()) {
        (None, _) => {}
        (Some(out), [file]) if !args.input.is_dir() => eprintln!(
            "re-sealed {objects} SealedSecrets of {} into {}",
            file.source,
            out.display()
        ),
        (Some(out), _) => eprintln!(
            "re-sealed {objects} SealedSecrets in {} files into {}",
            files.len(),
            out.display()
        ),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealed(values: &[(&str, &str)]) -> Document {
        let text = serde_json::json!({
            "apiVersion": "sigil.dev/v1",
            "kind": "SealedSecret",
            "metadata": {"name": "db", "namespace": "prod", "labels": {"team": "a"}},
            "spec": {"encryptedData": map(values)},
        })
        .to_string();
        document::parse_documents(&text, "db.json")
            .unwrap()
            .remove(0)
    }

    fn map(values: &[(&str, &str)]) -> serde_json::Map<String, Value> {
        values
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Value::from(*v)))
            .collect()
    }

    #[test]
    fn only_the_values_change() {
        let mut doc = sealed(&[("password", "old-1"), ("user", "old-2")]);
        let mut answer = sealed(&[("password", "new-1"), ("user", "new-2")])
            .value
            .clone();
        answer["metadata"]["labels"] = serde_json::json!({"server": "added"});
        take_values(&mut doc, &answer, &"SealedSecret prod/db").unwrap();
        assert_eq!(
            doc.value["spec"]["encryptedData"],
            Value::Object(map(&[("password", "new-1"), ("user", "new-2")]))
        );
        assert_eq!(
            doc.value["metadata"]["labels"],
            serde_json::json!({"team": "a"})
        );
    }

    #[test]
    fn an_answer_with_other_keys_is_refused() {
        let mut doc = sealed(&[("password", "old-1")]);
        let answer = sealed(&[("pass", "new-1")]).value.clone();
        let err = take_values(&mut doc, &answer, &"SealedSecret prod/db").unwrap_err();
        assert_eq!(
            err.to_string(),
            "db.json, document 1: sigil-api answered for SealedSecret prod/db with keys pass where the file has password"
        );
    }
}
