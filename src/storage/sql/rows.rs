//! The typed result rows of the SQL statements (diesel `QueryableByName`), shared
//! by every part of the backend.

use diesel::sql_types::{BigInt, Double, Nullable, Text};
use diesel::QueryableByName;

#[derive(QueryableByName, Debug)]
pub struct PageToken {
    #[diesel(sql_type = Text)]
    pub res_type: String,
    #[diesel(sql_type = Text)]
    pub params: String,
}

#[derive(QueryableByName, Debug)]
pub struct Head {
    #[diesel(sql_type = BigInt)]
    pub version: i64,
    #[diesel(sql_type = BigInt)]
    pub last_updated: i64,
    #[diesel(sql_type = BigInt)]
    pub deleted: i64,
    #[diesel(sql_type = Nullable<Text>)]
    pub content: Option<String>,
}

#[derive(QueryableByName, Debug)]
pub struct Found {
    #[diesel(sql_type = Text)]
    pub res_id: String,
    #[diesel(sql_type = BigInt)]
    pub version: i64,
    #[diesel(sql_type = BigInt)]
    pub last_updated: i64,
    #[diesel(sql_type = Nullable<Text>)]
    pub content: Option<String>,
}

#[derive(QueryableByName, Debug)]
pub struct VersionRow {
    #[diesel(sql_type = BigInt)]
    pub seq: i64,
    #[diesel(sql_type = Text)]
    pub res_type: String,
    #[diesel(sql_type = Text)]
    pub res_id: String,
    #[diesel(sql_type = BigInt)]
    pub version: i64,
    #[diesel(sql_type = BigInt)]
    pub last_updated: i64,
    #[diesel(sql_type = Text)]
    pub method: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub content: Option<String>,
}

#[derive(QueryableByName, Debug)]
pub struct ResId {
    #[diesel(sql_type = Text)]
    pub res_id: String,
}

#[derive(QueryableByName, Debug)]
pub struct IdList {
    /// Comma-separated (ids never contain a comma).
    #[diesel(sql_type = Nullable<Text>)]
    pub ids: Option<String>,
    #[diesel(sql_type = BigInt)]
    pub n: i64,
}

#[derive(QueryableByName, Debug)]
pub struct Target {
    #[diesel(sql_type = Text)]
    pub target_type: String,
    #[diesel(sql_type = Text)]
    pub target_id: String,
}

/// A search match with up to five typed sort-key columns.
#[derive(QueryableByName, Debug)]
pub struct Sorted {
    #[diesel(sql_type = Text)]
    pub res_id: String,
    #[diesel(sql_type = BigInt)]
    pub version: i64,
    #[diesel(sql_type = BigInt)]
    pub last_updated: i64,
    #[diesel(sql_type = Nullable<Text>)]
    pub content: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub k0_t: Option<String>,
    #[diesel(sql_type = Nullable<BigInt>)]
    pub k0_i: Option<i64>,
    #[diesel(sql_type = Nullable<Double>)]
    pub k0_r: Option<f64>,
    #[diesel(sql_type = Nullable<Text>)]
    pub k1_t: Option<String>,
    #[diesel(sql_type = Nullable<BigInt>)]
    pub k1_i: Option<i64>,
    #[diesel(sql_type = Nullable<Double>)]
    pub k1_r: Option<f64>,
    #[diesel(sql_type = Nullable<Text>)]
    pub k2_t: Option<String>,
    #[diesel(sql_type = Nullable<BigInt>)]
    pub k2_i: Option<i64>,
    #[diesel(sql_type = Nullable<Double>)]
    pub k2_r: Option<f64>,
    #[diesel(sql_type = Nullable<Text>)]
    pub k3_t: Option<String>,
    #[diesel(sql_type = Nullable<BigInt>)]
    pub k3_i: Option<i64>,
    #[diesel(sql_type = Nullable<Double>)]
    pub k3_r: Option<f64>,
    #[diesel(sql_type = Nullable<Text>)]
    pub k4_t: Option<String>,
    #[diesel(sql_type = Nullable<BigInt>)]
    pub k4_i: Option<i64>,
    #[diesel(sql_type = Nullable<Double>)]
    pub k4_r: Option<f64>,
}

#[derive(QueryableByName, Debug)]
pub struct Count {
    #[diesel(sql_type = BigInt)]
    pub n: i64,
}
