//! Versioned schema migrations, applied in order when a registry is opened.
//!
//! Each store has its own numbered SQL files in `crates/acorn-backend/migrations/<store>/`
//! (`0001_initial.sql`, `0002_certificate_arn.sql`, …), compiled into the binary. The
//! database records what it has applied in `acorn_schema_migrations` (version, name, time);
//! opening a registry applies the missing ones in one transaction (PostgreSQL: under an
//! advisory lock, so instances starting together migrate once), and refuses a database whose
//! schema is newer than this binary knows. A migration is never edited once released: a
//! change is a new file with the next number.
//!
//! An SQLite registry made before migrations existed (it has `devices` but no
//! `acorn_schema_migrations`) is adopted as version 1 after the token columns added in those
//! releases are put in place.

/// One schema migration.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Its number: 1, 2, … in order, no gaps.
    pub version: i64,
    /// Its file name without the number and `.sql`.
    pub name: &'static str,
    /// The SQL it runs.
    pub sql: &'static str,
}

/// The table recording applied migrations.
pub const MIGRATIONS_TABLE: &str = "acorn_schema_migrations";

/// SQLite's migrations.
pub const SQLITE: &[Migration] = &[
    Migration {
        version: 1,
        name: "initial",
        sql: include_str!("../../migrations/sqlite/0001_initial.sql"),
    },
    Migration {
        version: 2,
        name: "certificate_arn",
        sql: include_str!("../../migrations/sqlite/0002_certificate_arn.sql"),
    },
    Migration {
        version: 3,
        name: "reserved_for",
        sql: include_str!("../../migrations/sqlite/0003_reserved_for.sql"),
    },
    Migration {
        version: 4,
        name: "certificate_history",
        sql: include_str!("../../migrations/sqlite/0004_certificate_history.sql"),
    },
];

/// PostgreSQL's migrations (the same versions and names as [`SQLITE`]).
pub const POSTGRES: &[Migration] = &[
    Migration {
        version: 1,
        name: "initial",
        sql: include_str!("../../migrations/postgres/0001_initial.sql"),
    },
    Migration {
        version: 2,
        name: "certificate_arn",
        sql: include_str!("../../migrations/postgres/0002_certificate_arn.sql"),
    },
    Migration {
        version: 3,
        name: "reserved_for",
        sql: include_str!("../../migrations/postgres/0003_reserved_for.sql"),
    },
    Migration {
        version: 4,
        name: "certificate_history",
        sql: include_str!("../../migrations/postgres/0004_certificate_history.sql"),
    },
];

/// The schema version this binary brings each store to.
pub fn latest(migrations: &[Migration]) -> i64 {
    migrations.last().map_or(0, |m| m.version)
}

/// The migrations still to apply to a database at `current`, or why it cannot be migrated.
pub(crate) fn pending(
    migrations: &'static [Migration],
    current: i64,
) -> Result<&'static [Migration], crate::BackendError> {
    let known = latest(migrations);
    if current > known {
        return Err(crate::BackendError::SchemaTooNew {
            found: current,
            known,
        });
    }
    let start = migrations
        .iter()
        .position(|m| m.version > current)
        .unwrap_or(migrations.len());
    Ok(&migrations[start..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_consecutive_and_the_stores_agree() {
        for set in [SQLITE, POSTGRES] {
            for (i, m) in set.iter().enumerate() {
                assert_eq!(m.version, i as i64 + 1, "{}", m.name);
            }
        }
        let names = |s: &[Migration]| s.iter().map(|m| (m.version, m.name)).collect::<Vec<_>>();
        assert_eq!(names(SQLITE), names(POSTGRES));
    }

    #[test]
    fn pending_skips_what_is_applied_and_refuses_a_newer_schema() {
        assert_eq!(pending(SQLITE, 0).expect("fresh").len(), SQLITE.len());
        assert_eq!(pending(SQLITE, 1).expect("v1")[0].version, 2);
        assert!(pending(SQLITE, latest(SQLITE)).expect("current").is_empty());
        let err = pending(SQLITE, 99).expect_err("too new").to_string();
        assert!(err.contains("99") && err.contains("backup"), "{err}");
    }
}
