//! `sigil verify`: whether every value of SealedSecrets opens in the cluster, asked of
//! sigil-api (which asks the controller: only it holds the private keys).

use sigil_types::api::VerifyReport;

use crate::api::{self, Api, Call};
use crate::cli::VerifyArgs;
use crate::cluster;
use crate::document;
use crate::failure::Failure;
use crate::output;

pub(crate) fn run(args: &VerifyArgs) -> anyhow::Result<()> {
    let base = api::server(&args.api)?;
    let document::SealedManifests { documents, .. } = document::read_sealed_manifests(&args.input)?;
    let objects = documents
        .iter()
        .map(|doc| doc.sealed_secret_name("sigil verify"))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut closed = Vec::new();
    let mut values = 0;
    cluster::block_on(async {
        let api = Api::connect(&args.api, base)?;
        for (doc, object) in documents.iter().zip(&objects) {
            let call = Call::verify(object, &doc.value)?;
            let report: VerifyReport = api
                .send(&call)
                .await
                .map_err(|err| err.context(format!("{}: {object}", doc.origin)))?
                .body;
            let where_ = format!("{object} ({})", doc.origin);
            output::emit(None, &render(&where_, &report))?;
            values += report.keys.len();
            closed.extend(
                report
                    .keys
                    .iter()
                    .filter(|k| !k.opens)
                    .map(|k| format!("key `{}` of {where_}", k.key)),
            );
        }
        Ok(())
    })?;
    if closed.is_empty() {
        return Ok(());
    }
    Err(Failure::new(format!(
        "{} of {values} values do not open: {}",
        closed.len(),
        closed.join("; ")
    ))
    .with_hint("the lines above say why, and how to fix each")
    .into())
}

/// `OBJECT (ORIGIN)`, then `  KEY: opens` or `  KEY: does not open: REASON: MESSAGE`.
fn render(object: &str, report: &VerifyReport) -> String {
    let mut text = format!("{object}\n");
    for verdict in &report.keys {
        if verdict.opens {
            text.push_str(&format!("  {}: opens\n", verdict.key));
        } else {
            let reason = verdict.reason.as_deref().unwrap_or("Unknown");
            let message = verdict
                .message
                .as_deref()
                .map_or_else(String::new, |m| format!(": {m}"));
            text.push_str(&format!(
                "  {}: does not open: {reason}{message}\n",
                verdict.key
            ));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use sigil_types::api::KeyVerdict;

    #[test]
    fn each_key_opens_or_says_why_not() {
        let report = VerifyReport {
            namespace: "prod".to_owned(),
            name: "db".to_owned(),
            keys: vec![
                KeyVerdict {
                    key: "password".to_owned(),
                    opens: true,
                    reason: None,
                    message: None,
                },
                KeyVerdict {
                    key: "user".to_owned(),
                    opens: false,
                    reason: Some("WrongBinding".to_owned()),
                    message: Some("sealed for namespace `dev`".to_owned()),
                },
            ],
        };
        assert_eq!(
            render("SealedSecret prod/db (db.yaml, document 1)", &report),
            "SealedSecret prod/db (db.yaml, document 1)\n  password: opens\n  user: does not open: WrongBinding: sealed for namespace `dev`\n"
        );
    }
}
