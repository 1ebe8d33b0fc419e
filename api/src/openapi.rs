//! The OpenAPI document, generated from the code: paths and parameters from the
//! handlers' `#[utoipa::path]` attributes, and the body schemas from the very
//! `JsonSchema` derives that generate the CRDs, so the document cannot drift from what
//! the API server accepts.

use std::borrow::Cow;

use schemars::JsonSchema;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ObjectBuilder, RefOr, Schema};
use utoipa::{Modify, OpenApi, PartialSchema, ToSchema};

/// Declares a stand-in that lets `#[utoipa::path]` refer to a type by its schemars name;
/// [`document`] then fills in the schema from schemars.
macro_rules! schemars_backed {
    ($($doc:ident => $ty:ty),* $(,)?) => {
        $(
            #[doc = concat!("The schema of `", stringify!($ty), "`, taken from its `JsonSchema` derive.")]
            pub struct $doc;

            impl PartialSchema for $doc {
                fn schema() -> RefOr<Schema> {
                    ObjectBuilder::new().into()
                }
            }

            impl ToSchema for $doc {
                fn name() -> Cow<'static, str> {
                    <$ty as JsonSchema>::schema_name()
                }
            }
        )*

        fn add_schemars_definitions(generator: &mut schemars::SchemaGenerator) {
            $( generator.subschema_for::<$ty>(); )*
        }
    };
}

schemars_backed! {
    RotationDoc => sigil_types::Rotation,
    RotationSpecDoc => sigil_types::RotationSpec,
    RotationListDoc => sigil_types::api::RotationList,
    SealingKeyRotationRequestDoc => sigil_types::api::SealingKeyRotationRequest,
    SealedSecretDoc => sigil_types::SealedSecret,
    VerifyReportDoc => sigil_types::api::VerifyReport,
    ErrorDoc => sigil_types::api::ErrorBody,
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A Kubernetes token of the caller, checked with a TokenReview and \
                         authorized with a SubjectAccessReview",
                    ))
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "sigil-api",
        description = "Rotate credentials from a runbook: authenticated with the caller's Kubernetes identity, authorized by RBAC, safe to retry, audited.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        crate::rotations::create,
        crate::rotations::get,
        crate::rotations::list,
        crate::rotations::rotate_sealing_key,
        crate::sealed::public_keys,
        crate::sealed::verify,
        crate::sealed::reseal,
    ),
    modifiers(&BearerAuth),
)]
struct ApiDoc;

/// The document served at `/v1/openapi.json`.
pub fn document() -> serde_json::Value {
    let mut document = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    // The package version would make the checked-in copy differ at every release.
    document["info"]["version"] = serde_json::Value::from("v1");
    let mut generator = schemars::generate::SchemaSettings::draft2020_12()
        .with(|settings| settings.definitions_path = "/components/schemas".into())
        .into_generator();
    add_schemars_definitions(&mut generator);
    let schemas = &mut document["components"]["schemas"];
    if !schemas.is_object() {
        *schemas = serde_json::Value::Object(Default::default());
    }
    for (name, schema) in generator.take_definitions(true) {
        schemas[name] = schema;
    }
    // kube's derive leaves out the fields every Kubernetes object has.
    for kind in ["Rotation", "SealedSecret"] {
        let properties = &mut schemas[kind]["properties"];
        properties["apiVersion"] =
            serde_json::json!({"type": "string", "const": sigil_types::API_VERSION});
        properties["kind"] = serde_json::json!({"type": "string", "const": kind});
        properties["metadata"] = serde_json::json!({
            "type": "object",
            "description": "Kubernetes object metadata (name, namespace, uid, creationTimestamp, annotations, ...)"
        });
    }
    document
}

/// The document as checked in at `api/openapi.json`.
pub fn document_text() -> String {
    let mut text = serde_json::to_string_pretty(&document()).unwrap_or_default();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn references(value: &serde_json::Value, found: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                if let Some(serde_json::Value::String(target)) = map.get("$ref") {
                    found.push(target.clone());
                }
                map.values().for_each(|v| references(v, found));
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| references(v, found)),
            _ => {}
        }
    }

    #[test]
    fn every_reference_resolves_to_a_schemars_schema() {
        let document = document();
        let mut found = Vec::new();
        references(&document, &mut found);
        assert!(found.iter().any(|r| r == "#/components/schemas/Rotation"));
        for target in found {
            let name = target
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("unexpected $ref {target}"));
            let schema = &document["components"]["schemas"][name];
            assert!(
                schema.get("properties").is_some()
                    || schema.get("type").is_some()
                    || schema.get("oneOf").is_some()
                    || schema.get("enum").is_some(),
                "{name} is an empty stand-in: {schema}"
            );
        }
    }
}
