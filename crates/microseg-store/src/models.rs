//! Fitted models and experiments in the store.

use microseg_core::{ProfileId, TraitSpec, Value};
use microseg_engine::models::experiment::{Experiment, Member};
use rusqlite::{params, OptionalExtension};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::StoreError;
use crate::store::{now_ms, Store};

fn json_error(what: &str, e: serde_json::Error) -> StoreError {
    StoreError::Invalid(format!("store: {what} is unreadable: {e}"))
}

impl Store {
    /// Sets trait `name` (of type `spec`) on the given profiles and removes it from every
    /// other profile, in one transaction: a computed trait such as a persona number.
    pub fn set_trait(
        &mut self,
        name: &str,
        spec: &TraitSpec,
        values: &[(ProfileId, Value)],
    ) -> Result<(), StoreError> {
        // Immediate: take the write lock first (waiting for it), so a commit by another
        // connection between a read and the first write cannot fail the transaction.
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let stored: Option<String> = tx
            .query_row(
                "SELECT type FROM trait_types WHERE name = ?1",
                [name],
                |r| r.get(0),
            )
            .optional()?;
        match stored {
            Some(ty) if ty != spec.ty.name() => {
                return Err(StoreError::Invalid(format!(
                    "trait '{name}' already exists as {ty}; choose another name"
                )))
            }
            Some(_) => {}
            None => {
                tx.execute(
                    "INSERT INTO trait_types(name, type, separators) VALUES (?1, ?2, ?3)",
                    params![name, spec.ty.name(), spec.separators],
                )?;
            }
        }
        let path = format!("$.{}", microseg_engine::columnar::json_string(name));
        let now = now_ms();
        let version = crate::store::bump(&tx, crate::store::Counter::Profiles)?;
        tx.execute(
            "UPDATE profiles SET traits = json_remove(traits, ?1), updated_at = ?2, version = ?3
             WHERE json_type(traits, ?1) IS NOT NULL",
            params![path, now, version as i64],
        )?;
        {
            let mut update = tx.prepare(
                "UPDATE profiles SET traits = json_set(traits, ?2, json(?3)), updated_at = ?4,
                 version = ?5 WHERE id = ?1",
            )?;
            for (id, value) in values {
                update.execute(params![
                    id,
                    path,
                    value.to_json().to_string(),
                    now,
                    version as i64
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Saves clusters as segments `PREFIX_1`, `PREFIX_2`, ... through a trait `PREFIX`
    /// holding each member's cluster number (a nearest-centre rule is not a condition);
    /// `how` says how they were made. Returns the segment names.
    pub fn save_clusters(
        &mut self,
        prefix: &str,
        clusters: &[roaring::RoaringBitmap],
        how: &str,
    ) -> Result<Vec<String>, StoreError> {
        use microseg_core::condition::{CompareOp, Condition, Literal, Operand};
        let assignments: Vec<(ProfileId, Value)> = clusters
            .iter()
            .enumerate()
            .flat_map(|(c, b)| b.iter().map(move |p| (p, Value::Int(c as i64 + 1))))
            .collect();
        self.set_trait(
            prefix,
            &TraitSpec::new(microseg_core::TraitType::Integer),
            &assignments,
        )?;
        let k = clusters.len();
        let mut names = Vec::with_capacity(k);
        for c in 1..=k {
            let name = format!("{prefix}_{c}");
            let condition = Condition::Compare {
                left: Operand::Name(prefix.to_string()),
                op: CompareOp::Eq,
                right: Literal::Int(c as i64),
            };
            let description = format!("persona {c} of {k} ({how})");
            self.save_segment(&name, &condition, Some(&description), true)?;
            names.push(name);
        }
        Ok(names)
    }

    /// Saves (or replaces) model `name`.
    pub fn save_model(&mut self, name: &str, model: &impl Serialize) -> Result<(), StoreError> {
        let body = serde_json::to_string(model).map_err(|e| json_error(name, e))?;
        self.conn.execute(
            "INSERT INTO models(name, body, created_at) VALUES (?1, ?2, ?3)
             ON CONFLICT(name) DO UPDATE SET body = ?2, created_at = ?3",
            params![name, body, now_ms()],
        )?;
        Ok(())
    }

    /// Model `name`, if one was saved.
    pub fn model<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, StoreError> {
        let body: Option<String> = self
            .conn
            .query_row("SELECT body FROM models WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()?;
        body.map(|b| {
            serde_json::from_str(&b).map_err(|e| json_error(&format!("model '{name}'"), e))
        })
        .transpose()
    }

    /// Saves an experiment in one transaction, replacing one of the same name.
    pub fn save_experiment(
        &mut self,
        experiment: &Experiment,
        file: &str,
    ) -> Result<(), StoreError> {
        // Immediate: take the write lock first (waiting for it), so a commit by another
        // connection between a read and the first write cannot fail the transaction.
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute(
            "DELETE FROM experiment_members WHERE experiment = ?1",
            [&experiment.name],
        )?;
        let arms = serde_json::to_string(&experiment.arms).map_err(|e| json_error("arms", e))?;
        let outcomes =
            serde_json::to_string(&experiment.outcomes).map_err(|e| json_error("outcomes", e))?;
        tx.execute(
            "INSERT INTO experiments(name, control, arms, outcomes, file, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT(name) DO UPDATE SET control = ?2, arms = ?3, outcomes = ?4, file = ?5,
                 created_at = ?6",
            params![
                experiment.name,
                experiment.control,
                arms,
                outcomes,
                file,
                now_ms()
            ],
        )?;
        {
            let mut insert = tx.prepare(
                "INSERT OR REPLACE INTO experiment_members(experiment, profile_id, arm, outcomes)
                 VALUES (?1, ?2, ?3, ?4)",
            )?;
            for m in &experiment.members {
                let values: Vec<Option<f64>> = m
                    .outcomes
                    .iter()
                    .map(|v| (!v.is_nan()).then_some(*v))
                    .collect();
                let values =
                    serde_json::to_string(&values).map_err(|e| json_error("outcomes", e))?;
                insert.execute(params![experiment.name, m.profile, m.arm as i64, values])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// The names of the stored experiments.
    pub fn experiment_names(&self) -> Result<Vec<String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT name FROM experiments ORDER BY name")?;
        let names = stmt.query_map([], |r| r.get(0))?;
        Ok(names.collect::<Result<_, _>>()?)
    }

    /// Experiment `name`.
    pub fn experiment(&self, name: &str) -> Result<Experiment, StoreError> {
        let head: Option<(String, String, String)> = self
            .conn
            .query_row(
                "SELECT control, arms, outcomes FROM experiments WHERE name = ?1",
                [name],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let Some((control, arms, outcomes)) = head else {
            let known = self.experiment_names()?;
            return Err(StoreError::NotFound(format!(
                "no experiment '{name}' (experiments: {})",
                if known.is_empty() {
                    "none; load one with `microseg experiment import`".to_string()
                } else {
                    known.join(", ")
                }
            )));
        };
        let what = format!("experiment '{name}'");
        let arms: Vec<String> = serde_json::from_str(&arms).map_err(|e| json_error(&what, e))?;
        let outcomes: Vec<String> =
            serde_json::from_str(&outcomes).map_err(|e| json_error(&what, e))?;
        let mut stmt = self.conn.prepare(
            "SELECT profile_id, arm, outcomes FROM experiment_members
             WHERE experiment = ?1 ORDER BY profile_id",
        )?;
        let rows = stmt.query_map([name], |r| {
            Ok((
                r.get::<_, u32>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        let mut members = Vec::new();
        for row in rows {
            let (profile, arm, values) = row?;
            let values: Vec<Option<f64>> =
                serde_json::from_str(&values).map_err(|e| json_error(&what, e))?;
            members.push(Member {
                profile,
                arm: arm as usize,
                outcomes: values.into_iter().map(|v| v.unwrap_or(f64::NAN)).collect(),
            });
        }
        Ok(Experiment {
            name: name.to_string(),
            control,
            arms,
            outcomes,
            members,
        })
    }
}
