//! DynamoDB adapter of the [`ItemStore`] port, used by every Lambda function.
//!
//! Single-table layout (one item per [`Item`]):
//!
//! | attribute        | type | role                                                      |
//! |------------------|------|-----------------------------------------------------------|
//! | `pk`, `sk`       | S    | table hash and range key                                  |
//! | `v`              | N    | optimistic-concurrency version                            |
//! | `expires_at`     | N    | unix seconds; the table's TTL attribute                   |
//! | `tl_pk`, `tl_sk` | S    | hash and range key of the GSI `timeline` (projection ALL) |
//! | `data`           | S    | JSON payload owned by the typed layer                     |
//!
//! Conditions are server-side condition expressions so they hold under concurrency; the one
//! exception is a [`Write::Check`] outside a transaction, which has nothing to write and is
//! answered from a strongly consistent read (it is a point-in-time assertion either way).
//!
//! DynamoDB's TTL sweeper deletes expired items up to days late, so "absent" in a condition is
//! `attribute_not_exists(pk) OR expires_at <= :now`, the same boundary as [`Item::is_expired`].
//!
//! The SDK retries throttling and 5xx answers. Transactions carry an idempotency token, so a
//! retried transaction is applied once; a single conditional Put/Delete has no such token, and
//! if its first response is lost the retry can report `ConditionFailed` for a write that did
//! land (a DynamoDB property, not one of this adapter) — callers that care re-read the item.

pub mod table;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, ConditionCheck, Delete, GlobalSecondaryIndex,
    IndexStatus, KeySchemaElement, KeyType, Projection, ProjectionType, Put, ScalarAttributeType,
    TableStatus, TimeToLiveSpecification, TimeToLiveStatus, TransactWriteItem,
};
use aws_sdk_dynamodb::Client;
use base64::Engine as _;

use crate::store::item::{
    Condition, Item, ItemStore, Query, StoreError, Timeline, Write, MAX_TRANSACTION_ITEMS,
};

/// Name of the global secondary index that serves [`Query::Timeline`].
pub const TIMELINE_INDEX: &str = "timeline";

const PK: &str = "pk";
const SK: &str = "sk";
const VERSION: &str = "v";
const EXPIRES_AT: &str = "expires_at";
const TL_PK: &str = "tl_pk";
const TL_SK: &str = "tl_sk";
const DATA: &str = "data";

/// How long [`DynamoStore::create_table_if_missing`] waits for the table to become usable.
const TABLE_READY_TIMEOUT: Duration = Duration::from_secs(300);
const TABLE_POLL_INTERVAL: Duration = Duration::from_millis(500);

type AttributeMap = HashMap<String, AttributeValue>;

/// [`ItemStore`] on one DynamoDB table (see the module docs for the layout).
#[derive(Debug, Clone)]
pub struct DynamoStore {
    client: Client,
    table: String,
    /// Upper bound on items per Query/Scan request; `None` lets DynamoDB fill 1 MB pages.
    page_size: Option<u32>,
}

impl DynamoStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoStore {
            client,
            table: table.into(),
            page_size: None,
        }
    }

    /// Builds the client from the standard AWS environment (credentials chain, region, and
    /// `AWS_ENDPOINT_URL`, which is how tests and the self-hosted demo point at an emulator).
    pub async fn from_env(table: impl Into<String>) -> Self {
        let config = crate::aws::sdk_config().await;
        DynamoStore::new(Client::new(&config), table)
    }

    /// Caps the number of items each Query/Scan request asks for. Results are unchanged (the
    /// adapter follows pagination); smaller pages mean more, cheaper round trips — and let
    /// tests exercise pagination without writing megabytes.
    pub fn with_page_size(mut self, items: u32) -> Self {
        self.page_size = Some(items.max(1));
        self
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Creates the table (on-demand billing, the `timeline` GSI, TTL on `expires_at`) unless
    /// it exists, then waits until it and its index are ACTIVE. Safe to call repeatedly and
    /// concurrently; meant for tests, the demo and the CLI — production tables come from the
    /// SAM template.
    pub async fn create_table_if_missing(&self) -> Result<(), StoreError> {
        let exists = match self
            .client
            .describe_table()
            .table_name(&self.table)
            .send()
            .await
        {
            Ok(_) => true,
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_resource_not_found_exception()) =>
            {
                false
            }
            Err(e) => return Err(sdk_error("DescribeTable", e)),
        };
        if !exists {
            self.create_table().await?;
        }
        self.wait_until_active().await?;
        self.enable_ttl().await
    }

    async fn create_table(&self) -> Result<(), StoreError> {
        let build = |e| StoreError::backend("building the CreateTable request", e);
        let string_attr = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
        };
        let key = |name: &str, key_type| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(key_type)
                .build()
        };
        let timeline = GlobalSecondaryIndex::builder()
            .index_name(TIMELINE_INDEX)
            .key_schema(key(TL_PK, KeyType::Hash).map_err(build)?)
            .key_schema(key(TL_SK, KeyType::Range).map_err(build)?)
            .projection(
                Projection::builder()
                    .projection_type(ProjectionType::All)
                    .build(),
            )
            .build()
            .map_err(build)?;
        let result = self
            .client
            .create_table()
            .table_name(&self.table)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(string_attr(PK).map_err(build)?)
            .attribute_definitions(string_attr(SK).map_err(build)?)
            .attribute_definitions(string_attr(TL_PK).map_err(build)?)
            .attribute_definitions(string_attr(TL_SK).map_err(build)?)
            .key_schema(key(PK, KeyType::Hash).map_err(build)?)
            .key_schema(key(SK, KeyType::Range).map_err(build)?)
            .global_secondary_indexes(timeline)
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            // Someone else created it between our DescribeTable and CreateTable.
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_resource_in_use_exception()) =>
            {
                Ok(())
            }
            Err(e) => Err(sdk_error("CreateTable", e)),
        }
    }

    async fn wait_until_active(&self) -> Result<(), StoreError> {
        let deadline = tokio::time::Instant::now() + TABLE_READY_TIMEOUT;
        loop {
            let described = self
                .client
                .describe_table()
                .table_name(&self.table)
                .send()
                .await
                .map_err(|e| sdk_error("DescribeTable", e))?;
            if let Some(table) = described.table() {
                let table_active = table.table_status() == Some(&TableStatus::Active);
                let indexes_active = table.global_secondary_indexes().iter().all(|index| {
                    index
                        .index_status()
                        .is_none_or(|s| *s == IndexStatus::Active)
                });
                if table_active && indexes_active {
                    return Ok(());
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(StoreError::Backend {
                    message: format!("table {} did not become ACTIVE in time", self.table),
                    source: None,
                });
            }
            tokio::time::sleep(TABLE_POLL_INTERVAL).await;
        }
    }

    async fn enable_ttl(&self) -> Result<(), StoreError> {
        let described = self
            .client
            .describe_time_to_live()
            .table_name(&self.table)
            .send()
            .await
            .map_err(|e| sdk_error("DescribeTimeToLive", e))?;
        let status = described
            .time_to_live_description()
            .and_then(|d| d.time_to_live_status());
        if matches!(
            status,
            Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling)
        ) {
            return Ok(());
        }
        let spec = TimeToLiveSpecification::builder()
            .attribute_name(EXPIRES_AT)
            .enabled(true)
            .build()
            .map_err(|e| StoreError::backend("building the UpdateTimeToLive request", e))?;
        match self
            .client
            .update_time_to_live()
            .table_name(&self.table)
            .time_to_live_specification(spec)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            // A concurrent caller enabled it first ("TimeToLive is already enabled").
            Err(e) if e.code() == Some("ValidationException") => Ok(()),
            Err(e) => Err(sdk_error("UpdateTimeToLive", e)),
        }
    }

    async fn put(&self, item: Item, condition: Condition) -> Result<(), StoreError> {
        let key = key_name(&item.pk, &item.sk);
        let attributes = to_attributes(item)?;
        let expr = ConditionExpr::for_condition(condition);
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(attributes))
            .set_condition_expression(expr.expression)
            .set_expression_attribute_names(expr.names)
            .set_expression_attribute_values(expr.values)
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) => Err(match e.as_service_error() {
                Some(s) if s.is_conditional_check_failed_exception() => {
                    StoreError::ConditionFailed { key }
                }
                Some(s) if s.is_transaction_conflict_exception() => StoreError::Conflict,
                _ => sdk_error("PutItem", e),
            }),
        }
    }

    async fn delete(&self, pk: &str, sk: &str, condition: Condition) -> Result<(), StoreError> {
        validate_key(pk, sk)?;
        let expr = ConditionExpr::for_condition(condition);
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key_attributes(pk, sk)))
            .set_condition_expression(expr.expression)
            .set_expression_attribute_names(expr.names)
            .set_expression_attribute_values(expr.values)
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) => Err(match e.as_service_error() {
                Some(s) if s.is_conditional_check_failed_exception() => {
                    StoreError::ConditionFailed {
                        key: key_name(pk, sk),
                    }
                }
                Some(s) if s.is_transaction_conflict_exception() => StoreError::Conflict,
                _ => sdk_error("DeleteItem", e),
            }),
        }
    }

    /// A lone check has nothing to write, so it is evaluated against a strongly consistent
    /// read; the answer is as of the read, exactly what a check can promise outside a
    /// transaction.
    async fn check(&self, pk: &str, sk: &str, condition: Condition) -> Result<(), StoreError> {
        validate_key(pk, sk)?;
        let current = self.get(pk, sk).await?;
        let holds = match condition {
            Condition::None => true,
            Condition::Absent { now } => current.is_none_or(|item| item.is_expired(now)),
            Condition::Version(v) => current.is_some_and(|item| item.version == v),
        };
        if holds {
            Ok(())
        } else {
            Err(StoreError::ConditionFailed {
                key: key_name(pk, sk),
            })
        }
    }

    fn page_limit(&self, remaining: Option<usize>) -> Option<i32> {
        let remaining = remaining.map(|n| i32::try_from(n).unwrap_or(i32::MAX));
        let page = self.page_size.map(|n| i32::try_from(n).unwrap_or(i32::MAX));
        match (remaining, page) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    async fn query_partition(
        &self,
        pk: String,
        sk_prefix: String,
        descending: bool,
        limit: Option<usize>,
    ) -> Result<Vec<Item>, StoreError> {
        // Nothing can be stored under an empty key, and DynamoDB rejects empty key values.
        if pk.is_empty() || limit == Some(0) {
            return Ok(Vec::new());
        }
        let mut names = HashMap::from([("#pk".to_owned(), PK.to_owned())]);
        let mut values = HashMap::from([(":pk".to_owned(), AttributeValue::S(pk))]);
        let key_condition = if sk_prefix.is_empty() {
            "#pk = :pk".to_owned()
        } else {
            names.insert("#sk".to_owned(), SK.to_owned());
            values.insert(":prefix".to_owned(), AttributeValue::S(sk_prefix));
            "#pk = :pk AND begins_with(#sk, :prefix)".to_owned()
        };
        let mut items = Vec::new();
        let mut start_key = None;
        loop {
            let remaining = limit.map(|l| l - items.len());
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .consistent_read(true)
                .key_condition_expression(&key_condition)
                .set_expression_attribute_names(Some(names.clone()))
                .set_expression_attribute_values(Some(values.clone()))
                .scan_index_forward(!descending)
                .set_limit(self.page_limit(remaining))
                .set_exclusive_start_key(start_key.take())
                .send()
                .await
                .map_err(|e| sdk_error("Query", e))?;
            for attributes in page.items.unwrap_or_default() {
                items.push(from_attributes(attributes)?);
            }
            start_key = page.last_evaluated_key.filter(|k| !k.is_empty());
            if start_key.is_none() || limit.is_some_and(|l| items.len() >= l) {
                break;
            }
        }
        if let Some(l) = limit {
            items.truncate(l);
        }
        Ok(items)
    }

    /// The port's range is half-open (`from <= sk < to`) but DynamoDB's only two-sided key
    /// condition, BETWEEN, is inclusive; items sitting exactly on `to` are read and dropped
    /// here. Ascending, they come last, so reaching one ends the query.
    async fn query_timeline(
        &self,
        pk: String,
        from: String,
        to: String,
        descending: bool,
        limit: Option<usize>,
    ) -> Result<Vec<Item>, StoreError> {
        if pk.is_empty() || to <= from || limit == Some(0) {
            return Ok(Vec::new());
        }
        let names = HashMap::from([
            ("#tp".to_owned(), TL_PK.to_owned()),
            ("#ts".to_owned(), TL_SK.to_owned()),
        ]);
        let mut values = HashMap::from([
            (":tp".to_owned(), AttributeValue::S(pk)),
            (":to".to_owned(), AttributeValue::S(to.clone())),
        ]);
        // DynamoDB rejects an empty key value, and `"" <= sk` holds for every sk anyway.
        let key_condition = if from.is_empty() {
            "#tp = :tp AND #ts < :to".to_owned()
        } else {
            values.insert(":from".to_owned(), AttributeValue::S(from));
            "#tp = :tp AND #ts BETWEEN :from AND :to".to_owned()
        };
        let mut items = Vec::new();
        let mut start_key = None;
        'pages: loop {
            let remaining = limit.map(|l| l - items.len());
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(TIMELINE_INDEX)
                .key_condition_expression(&key_condition)
                .set_expression_attribute_names(Some(names.clone()))
                .set_expression_attribute_values(Some(values.clone()))
                .scan_index_forward(!descending)
                .set_limit(self.page_limit(remaining))
                .set_exclusive_start_key(start_key.take())
                .send()
                .await
                .map_err(|e| sdk_error("Query", e))?;
            for attributes in page.items.unwrap_or_default() {
                let item = from_attributes(attributes)?;
                let on_upper_bound = item.timeline.as_ref().is_none_or(|t| t.sk >= to);
                if on_upper_bound {
                    if descending {
                        continue;
                    }
                    break 'pages;
                }
                items.push(item);
                if limit.is_some_and(|l| items.len() >= l) {
                    break 'pages;
                }
            }
            start_key = page.last_evaluated_key.filter(|k| !k.is_empty());
            if start_key.is_none() {
                break;
            }
        }
        Ok(items)
    }
}

#[async_trait]
impl ItemStore for DynamoStore {
    async fn get(&self, pk: &str, sk: &str) -> Result<Option<Item>, StoreError> {
        if pk.is_empty() || sk.is_empty() {
            return Ok(None);
        }
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key_attributes(pk, sk)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error("GetItem", e))?;
        output.item.map(from_attributes).transpose()
    }

    async fn write(&self, write: Write) -> Result<(), StoreError> {
        match write {
            Write::Put { item, condition } => self.put(item, condition).await,
            Write::Delete { pk, sk, condition } => self.delete(&pk, &sk, condition).await,
            Write::Check { pk, sk, condition } => self.check(&pk, &sk, condition).await,
        }
    }

    async fn transact(&self, writes: Vec<Write>) -> Result<(), StoreError> {
        if writes.len() > MAX_TRANSACTION_ITEMS {
            return Err(StoreError::Invalid(format!(
                "a transaction holds at most {MAX_TRANSACTION_ITEMS} writes, got {}",
                writes.len()
            )));
        }
        let mut seen = HashSet::new();
        for write in &writes {
            let (pk, sk) = write.key();
            validate_key(pk, sk)?;
            if !seen.insert((pk, sk)) {
                return Err(StoreError::Invalid(format!(
                    "two writes in one transaction address {}",
                    key_name(pk, sk)
                )));
            }
        }
        if writes.is_empty() {
            return Ok(());
        }
        let keys: Vec<String> = writes
            .iter()
            .map(|w| key_name(w.key().0, w.key().1))
            .collect();
        let items = writes
            .into_iter()
            .map(|w| self.transact_item(w))
            .collect::<Result<Vec<_>, _>>()?;
        let result = self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await;
        let err = match result {
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        // One code per write, in request order; "None" marks writes that were fine.
        let codes: Vec<String> = match err.as_service_error() {
            Some(TransactWriteItemsError::TransactionCanceledException(canceled)) => canceled
                .cancellation_reasons()
                .iter()
                .map(|r| r.code().unwrap_or("None").to_owned())
                .collect(),
            _ => return Err(sdk_error("TransactWriteItems", err)),
        };
        Err(cancellation_error(&codes, &keys, err))
    }

    async fn query(&self, query: Query) -> Result<Vec<Item>, StoreError> {
        match query {
            Query::Partition {
                pk,
                sk_prefix,
                descending,
                limit,
            } => self.query_partition(pk, sk_prefix, descending, limit).await,
            Query::Timeline {
                pk,
                from,
                to,
                descending,
                limit,
            } => self.query_timeline(pk, from, to, descending, limit).await,
        }
    }

    async fn scan(
        &self,
        segment: u32,
        total_segments: u32,
        cursor: Option<String>,
    ) -> Result<(Vec<Item>, Option<String>), StoreError> {
        if total_segments == 0 || segment >= total_segments {
            return Err(StoreError::Invalid(format!(
                "scan segment {segment} of {total_segments} does not exist"
            )));
        }
        let to_i32 = |n: u32| {
            i32::try_from(n)
                .map_err(|_| StoreError::Invalid(format!("scan segment count {n} is too large")))
        };
        let start_key = cursor.as_deref().map(decode_cursor).transpose()?;
        let page = self
            .client
            .scan()
            .table_name(&self.table)
            .consistent_read(true)
            .segment(to_i32(segment)?)
            .total_segments(to_i32(total_segments)?)
            .set_limit(self.page_limit(None))
            .set_exclusive_start_key(start_key)
            .send()
            .await
            .map_err(|e| sdk_error("Scan", e))?;
        let items = page
            .items
            .unwrap_or_default()
            .into_iter()
            .map(from_attributes)
            .collect::<Result<Vec<_>, _>>()?;
        let cursor = page
            .last_evaluated_key
            .filter(|k| !k.is_empty())
            .map(|k| encode_cursor(&k))
            .transpose()?;
        Ok((items, cursor))
    }
}

impl DynamoStore {
    fn transact_item(&self, write: Write) -> Result<TransactWriteItem, StoreError> {
        let build = |e| StoreError::backend("building the TransactWriteItems request", e);
        let item = match write {
            Write::Put { item, condition } => {
                let expr = ConditionExpr::for_condition(condition);
                let put = Put::builder()
                    .table_name(&self.table)
                    .set_item(Some(to_attributes(item)?))
                    .set_condition_expression(expr.expression)
                    .set_expression_attribute_names(expr.names)
                    .set_expression_attribute_values(expr.values)
                    .build()
                    .map_err(build)?;
                TransactWriteItem::builder().put(put).build()
            }
            Write::Delete { pk, sk, condition } => {
                let expr = ConditionExpr::for_condition(condition);
                let delete = Delete::builder()
                    .table_name(&self.table)
                    .set_key(Some(key_attributes(&pk, &sk)))
                    .set_condition_expression(expr.expression)
                    .set_expression_attribute_names(expr.names)
                    .set_expression_attribute_values(expr.values)
                    .build()
                    .map_err(build)?;
                TransactWriteItem::builder().delete(delete).build()
            }
            Write::Check { pk, sk, condition } => {
                // ConditionCheck demands an expression; an unconditional check still belongs
                // in the transaction (it claims the key), so it gets a tautology.
                let expr = match condition {
                    Condition::None => ConditionExpr::always(),
                    other => ConditionExpr::for_condition(other),
                };
                let check = ConditionCheck::builder()
                    .table_name(&self.table)
                    .set_key(Some(key_attributes(&pk, &sk)))
                    .set_condition_expression(expr.expression)
                    .set_expression_attribute_names(expr.names)
                    .set_expression_attribute_values(expr.values)
                    .build()
                    .map_err(build)?;
                TransactWriteItem::builder().condition_check(check).build()
            }
        };
        Ok(item)
    }
}

/// Turns a cancelled transaction into the port's error. `codes` holds DynamoDB's cancellation
/// reason codes in request order ("None" for writes that were fine) and `keys` the matching
/// item keys. A failed condition wins over a conflict: retrying would fail the same way.
fn cancellation_error<E>(codes: &[String], keys: &[String], err: E) -> StoreError
where
    aws_sdk_dynamodb::Error: From<E>,
{
    if let Some(i) = codes.iter().position(|c| c == "ConditionalCheckFailed") {
        return StoreError::ConditionFailed {
            key: keys.get(i).cloned().unwrap_or_default(),
        };
    }
    if codes.iter().any(|c| c == "TransactionConflict") {
        return StoreError::Conflict;
    }
    let codes: Vec<&str> = codes
        .iter()
        .map(String::as_str)
        .filter(|c| *c != "None")
        .collect();
    if codes.contains(&"ValidationError") {
        return StoreError::Invalid(format!(
            "DynamoDB rejected the transaction: {}",
            codes.join(", ")
        ));
    }
    StoreError::Backend {
        message: format!("DynamoDB cancelled the transaction: {}", codes.join(", ")),
        source: Some(Box::new(aws_sdk_dynamodb::Error::from(err))),
    }
}

/// A condition rendered as a DynamoDB condition expression. Names go through placeholders
/// because DynamoDB refuses unused placeholders and reserved words (`data` is one).
#[derive(Default)]
struct ConditionExpr {
    expression: Option<String>,
    names: Option<HashMap<String, String>>,
    values: Option<AttributeMap>,
}

impl ConditionExpr {
    fn for_condition(condition: Condition) -> Self {
        match condition {
            Condition::None => ConditionExpr::default(),
            Condition::Absent { now } => ConditionExpr {
                // `<=` matches `Item::is_expired`: an item expiring exactly at `now` is gone.
                expression: Some("attribute_not_exists(#pk) OR #exp <= :now".to_owned()),
                names: Some(HashMap::from([
                    ("#pk".to_owned(), PK.to_owned()),
                    ("#exp".to_owned(), EXPIRES_AT.to_owned()),
                ])),
                values: Some(HashMap::from([(
                    ":now".to_owned(),
                    AttributeValue::N(now.to_string()),
                )])),
            },
            Condition::Version(v) => ConditionExpr {
                expression: Some("#v = :v".to_owned()),
                names: Some(HashMap::from([("#v".to_owned(), VERSION.to_owned())])),
                values: Some(HashMap::from([(
                    ":v".to_owned(),
                    AttributeValue::N(v.to_string()),
                )])),
            },
        }
    }

    fn always() -> Self {
        ConditionExpr {
            expression: Some("attribute_exists(#pk) OR attribute_not_exists(#pk)".to_owned()),
            names: Some(HashMap::from([("#pk".to_owned(), PK.to_owned())])),
            values: None,
        }
    }
}

fn key_name(pk: &str, sk: &str) -> String {
    format!("{pk}/{sk}")
}

/// DynamoDB refuses empty strings in key attributes; saying so up front beats a generic
/// ValidationException.
fn validate_key(pk: &str, sk: &str) -> Result<(), StoreError> {
    if pk.is_empty() || sk.is_empty() {
        return Err(StoreError::Invalid(format!(
            "DynamoDB keys must not be empty (got {:?})",
            key_name(pk, sk)
        )));
    }
    Ok(())
}

fn key_attributes(pk: &str, sk: &str) -> AttributeMap {
    HashMap::from([
        (PK.to_owned(), AttributeValue::S(pk.to_owned())),
        (SK.to_owned(), AttributeValue::S(sk.to_owned())),
    ])
}

fn to_attributes(item: Item) -> Result<AttributeMap, StoreError> {
    validate_key(&item.pk, &item.sk)?;
    let mut attributes = key_attributes(&item.pk, &item.sk);
    attributes.insert(
        VERSION.to_owned(),
        AttributeValue::N(item.version.to_string()),
    );
    attributes.insert(DATA.to_owned(), AttributeValue::S(item.data));
    if let Some(expires_at) = item.expires_at {
        attributes.insert(
            EXPIRES_AT.to_owned(),
            AttributeValue::N(expires_at.to_string()),
        );
    }
    if let Some(timeline) = item.timeline {
        if timeline.pk.is_empty() || timeline.sk.is_empty() {
            return Err(StoreError::Invalid(format!(
                "timeline keys of {} must not be empty",
                key_name(&item.pk, &item.sk)
            )));
        }
        attributes.insert(TL_PK.to_owned(), AttributeValue::S(timeline.pk));
        attributes.insert(TL_SK.to_owned(), AttributeValue::S(timeline.sk));
    }
    Ok(attributes)
}

/// Reads an item back. Errors name the attribute, never its value.
fn from_attributes(mut attributes: AttributeMap) -> Result<Item, StoreError> {
    fn malformed(attribute: &str) -> StoreError {
        StoreError::Backend {
            message: format!("stored item has a missing or malformed `{attribute}` attribute"),
            source: None,
        }
    }
    let mut string = |name: &str| match attributes.remove(name) {
        Some(AttributeValue::S(s)) => Ok(Some(s)),
        None => Ok(None),
        Some(_) => Err(malformed(name)),
    };
    let pk = string(PK)?.ok_or_else(|| malformed(PK))?;
    let sk = string(SK)?.ok_or_else(|| malformed(SK))?;
    let data = string(DATA)?.ok_or_else(|| malformed(DATA))?;
    let timeline = match (string(TL_PK)?, string(TL_SK)?) {
        (Some(pk), Some(sk)) => Some(Timeline { pk, sk }),
        (None, None) => None,
        _ => return Err(malformed(TL_PK)),
    };
    let version = match attributes.remove(VERSION) {
        Some(AttributeValue::N(n)) => n.parse::<u64>().map_err(|_| malformed(VERSION))?,
        _ => return Err(malformed(VERSION)),
    };
    let expires_at = match attributes.remove(EXPIRES_AT) {
        Some(AttributeValue::N(n)) => Some(n.parse::<i64>().map_err(|_| malformed(EXPIRES_AT))?),
        None => None,
        Some(_) => return Err(malformed(EXPIRES_AT)),
    };
    Ok(Item {
        pk,
        sk,
        version,
        expires_at,
        timeline,
        data,
    })
}

/// Scan cursor: the LastEvaluatedKey (always `pk`/`sk` strings on the base table) as
/// URL-safe base64 of a JSON object, opaque to callers.
#[derive(serde::Serialize, serde::Deserialize)]
struct Cursor {
    pk: String,
    sk: String,
}

fn encode_cursor(key: &AttributeMap) -> Result<String, StoreError> {
    let field = |name: &str| match key.get(name) {
        Some(AttributeValue::S(s)) => Ok(s.clone()),
        _ => Err(StoreError::Backend {
            message: format!("scan returned a LastEvaluatedKey without a string `{name}`"),
            source: None,
        }),
    };
    let cursor = Cursor {
        pk: field(PK)?,
        sk: field(SK)?,
    };
    let json = serde_json::to_vec(&cursor)
        .map_err(|e| StoreError::backend("encoding the scan cursor", e))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json))
}

fn decode_cursor(cursor: &str) -> Result<AttributeMap, StoreError> {
    let invalid = || StoreError::Invalid("malformed scan cursor".to_owned());
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .map_err(|_| invalid())?;
    let cursor: Cursor = serde_json::from_slice(&json).map_err(|_| invalid())?;
    Ok(key_attributes(&cursor.pk, &cursor.sk))
}

/// Maps an SDK failure that has no meaning in the port. The message names the operation and
/// the error code only; the full error (which never holds item data, since no request asks
/// DynamoDB to return old values on failure) stays attached as the source.
fn sdk_error<E, R>(operation: &str, err: SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
    aws_sdk_dynamodb::Error: From<SdkError<E, R>>,
{
    let kind = match &err {
        SdkError::ServiceError(_) => err.code().unwrap_or("unknown service error").to_owned(),
        SdkError::TimeoutError(_) => "timeout".to_owned(),
        SdkError::DispatchFailure(_) => "dispatch failure".to_owned(),
        SdkError::ResponseError(_) => "unreadable response".to_owned(),
        SdkError::ConstructionFailure(_) => "request construction failure".to_owned(),
        _ => "unknown failure".to_owned(),
    };
    if kind == "ValidationException" {
        // Not retryable, so not Backend. DynamoDB's validation messages describe the request
        // shape (sizes, attribute names), not attribute values.
        let detail = err.message().unwrap_or("no detail").to_owned();
        return StoreError::Invalid(format!("DynamoDB rejected {operation}: {detail}"));
    }
    StoreError::Backend {
        message: format!("DynamoDB {operation} failed: {kind}"),
        source: Some(Box::new(aws_sdk_dynamodb::Error::from(err))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes(codes: &[&str]) -> Vec<String> {
        codes.iter().map(|c| (*c).to_owned()).collect()
    }

    fn keys() -> Vec<String> {
        codes(&["A/1", "B/2", "C/3"])
    }

    fn unhandled() -> aws_sdk_dynamodb::Error {
        aws_sdk_dynamodb::Error::InternalServerError(
            aws_sdk_dynamodb::types::error::InternalServerError::builder().build(),
        )
    }

    #[test]
    fn cancelled_transaction_names_the_first_failed_condition_even_amid_conflicts() {
        let reasons = codes(&[
            "TransactionConflict",
            "ConditionalCheckFailed",
            "ConditionalCheckFailed",
        ]);
        let err = cancellation_error(&reasons, &keys(), unhandled());
        assert!(
            matches!(&err, StoreError::ConditionFailed { key } if key == "B/2"),
            "{err:?}"
        );
    }

    #[test]
    fn cancelled_transaction_with_only_conflicts_is_a_retryable_conflict() {
        let err = cancellation_error(
            &codes(&["None", "TransactionConflict", "None"]),
            &keys(),
            unhandled(),
        );
        assert!(matches!(err, StoreError::Conflict));
        assert!(err.is_retryable());
    }

    #[test]
    fn cancelled_transaction_with_a_validation_error_is_invalid_and_other_reasons_are_backend() {
        let invalid = cancellation_error(
            &codes(&["None", "ValidationError", "None"]),
            &keys(),
            unhandled(),
        );
        assert!(matches!(invalid, StoreError::Invalid(_)), "{invalid:?}");
        let throttled = cancellation_error(
            &codes(&["ThrottlingError", "None", "None"]),
            &keys(),
            unhandled(),
        );
        assert!(
            matches!(&throttled, StoreError::Backend { message, .. } if message.contains("ThrottlingError")),
            "{throttled:?}"
        );
    }

    #[test]
    fn scan_cursor_round_trips_the_last_evaluated_key() {
        let key = key_attributes("ENV#prod/odd key", "LOCK");
        let cursor = encode_cursor(&key).expect("encode");
        assert_eq!(decode_cursor(&cursor).expect("decode"), key);
    }

    #[test]
    fn stored_item_with_a_malformed_version_is_a_backend_error_that_hides_the_value() {
        let mut attributes = to_attributes(Item {
            pk: "P".into(),
            sk: "S".into(),
            version: 1,
            expires_at: None,
            timeline: None,
            data: "secret".into(),
        })
        .expect("attributes");
        attributes.insert(VERSION.to_owned(), AttributeValue::N("secret-1.5".into()));
        let err = from_attributes(attributes).expect_err("malformed version");
        assert!(matches!(&err, StoreError::Backend { .. }));
        assert!(
            err.to_string().contains("`v`") && !err.to_string().contains("secret"),
            "{err}"
        );
    }
}
