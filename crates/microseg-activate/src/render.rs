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

/// A message's fields compiled once, rendered for many people.
pub struct Compiled<'env, 'source> {
    fields: Vec<(String, minijinja::Template<'env, 'source>)>,
}

/// Compiles every field of `message` (checked at create; an error here names the field).
///
/// # Errors
///
/// The first field that does not parse.
pub fn compile<'env, 'source>(
    env: &'env Environment<'source>,
    message: &'source BTreeMap<String, String>,
) -> Result<Compiled<'env, 'source>, RenderError> {
    let fields = message
        .iter()
        .map(|(field, source)| {
            env.template_from_str(source)
                .map(|t| (field.clone(), t))
                .map_err(|e| error(field, &e))
        })
        .collect::<Result<_, _>>()?;
    Ok(Compiled { fields })
}

fn error(field: &str, e: &minijinja::Error) -> RenderError {
    RenderError {
        field: field.to_string(),
        reason: match e.line() {
            Some(line) => format!(
                "line {line}: {}",
                e.detail()
                    .map_or_else(|| e.kind().to_string(), str::to_string)
            ),
            None => e.to_string(),
        },
    }
}

impl Compiled<'_, '_> {
    /// Renders every field with `context`.
    ///
    /// # Errors
    ///
    /// The first field that fails, with the reason (for a missing variable:
    /// `undefined value`, with the line).
    pub fn render(&self, context: &Json) -> Result<BTreeMap<String, String>, RenderError> {
        let ctx = minijinja::Value::from_serialize(context);
        self.fields
            .iter()
            .map(|(field, t)| {
                t.render(ctx.clone())
                    .map(|out| (field.clone(), out))
                    .map_err(|e| error(field, &e))
            })
            .collect()
    }
}

/// Renders every field of `message` with `context` (compiling it first; for one message).
///
/// # Errors
///
/// As [`Compiled::render`], or a field that does not parse.
pub fn render(
    env: &Environment<'_>,
    message: &BTreeMap<String, String>,
    context: &Json,
) -> Result<BTreeMap<String, String>, RenderError> {
    compile(env, message)?.render(context)
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
