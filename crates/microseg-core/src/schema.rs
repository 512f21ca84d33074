//! The trait schema of a workspace: each trait's type, and how string sets are written.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::value::TraitType;

/// How one trait is typed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraitSpec {
    /// The trait's type.
    #[serde(rename = "type")]
    pub ty: TraitType,
    /// Characters that separate the items of a string set in text files (default `;` and `|`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub separators: Option<String>,
}

impl TraitSpec {
    /// A spec of type `ty` with default separators.
    pub fn new(ty: TraitType) -> TraitSpec {
        TraitSpec {
            ty,
            separators: None,
        }
    }

    /// The separators of a string set.
    pub fn separator_chars(&self) -> Vec<char> {
        match &self.separators {
            Some(s) if !s.is_empty() => s.chars().collect(),
            _ => vec![';', '|'],
        }
    }
}

/// Trait name to spec, ordered by name.
pub type Schema = BTreeMap<String, TraitSpec>;
