//! A statement's name and shape ([`Query`]): what the engine knows of a feature's statement.

/// A statement's name and shape, written beside its SQL by the feature that owns it: the
/// name labels its metrics and the slow-query log; the operation and the table name its
/// trace span (`db.operation.name`, `db.collection.name`), never its SQL or parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Query {
    pub name: &'static str,
    pub operation: &'static str,
    pub collection: &'static str,
}

impl Query {
    pub const fn select(name: &'static str, collection: &'static str) -> Query {
        Query::new(name, "SELECT", collection)
    }
    pub const fn insert(name: &'static str, collection: &'static str) -> Query {
        Query::new(name, "INSERT", collection)
    }
    pub const fn update(name: &'static str, collection: &'static str) -> Query {
        Query::new(name, "UPDATE", collection)
    }
    pub const fn delete(name: &'static str, collection: &'static str) -> Query {
        Query::new(name, "DELETE", collection)
    }
    const fn new(name: &'static str, operation: &'static str, collection: &'static str) -> Query {
        Query {
            name,
            operation,
            collection,
        }
    }
}
