//! Messages from minijinja templates. A variable the template uses that the person does
//! not have is an error for that person (strict undefined), never an empty string sent.

use std::collections::BTreeMap;

use minijinja::{Environment, UndefinedBehavior};
use serde_json::Value as Json;

/// The environment every template is checked and rendered in: strict about undefined
/// values, no auto-escaping (the channel decides; HTML is the template's to escape with
/// `|e`).
pub fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    env
}

/// Why a message could not be rendered for one person.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct RenderError {
    /// The message field.
    pub field: String,
    /// What failed (a missing variable names it).
    pub reason: String,
}

/// Renders every field of `message` with `context`.
///
/// # Errors
///
/// The first field that fails, with the reason (for a missing variable:
/// `undefined value`, with the line).
pub fn render(
    env: &Environment<'_>,
    message: &BTreeMap<String, String>,
    context: &Json,
) -> Result<BTreeMap<String, String>, RenderError> {
    let ctx = minijinja::Value::from_serialize(context);
    message
        .iter()
        .map(|(field, source)| {
            let out = env
                .render_str(source, ctx.clone())
                .map_err(|e| RenderError {
                    field: field.clone(),
                    reason: match e.line() {
                        Some(line) => format!(
                            "line {line}: {}",
                            e.detail()
                                .map_or_else(|| e.kind().to_string(), str::to_string)
                        ),
                        None => e.to_string(),
                    },
                })?;
            Ok((field.clone(), out))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_missing_variable_is_an_error_not_an_empty_string() {
        let env = environment();
        let message: BTreeMap<String, String> = [
            (
                "subject".to_string(),
                "{{ first_name }}, 15% off".to_string(),
            ),
            (
                "text".to_string(),
                "Code {{ offer.code }}\n{{ city }}".to_string(),
            ),
        ]
        .into();
        let ok = render(
            &env,
            &message,
            &json!({"first_name": "Anna", "city": "Pécs", "offer": {"code": "X1"}}),
        )
        .unwrap();
        assert_eq!(ok["subject"], "Anna, 15% off");
        assert_eq!(ok["text"], "Code X1\nPécs");
        let e = render(
            &env,
            &message,
            &json!({"first_name": "Bob", "offer": {"code": "X"}}),
        )
        .unwrap_err();
        assert_eq!(e.field, "text");
        assert!(e.reason.starts_with("line 2"), "{e}");
        // `default` is how a template says a value is optional.
        let soft: BTreeMap<String, String> = [(
            "text".to_string(),
            "Hi {{ first_name | default('there') }}".to_string(),
        )]
        .into();
        assert_eq!(render(&env, &soft, &json!({})).unwrap()["text"], "Hi there");
    }
}
