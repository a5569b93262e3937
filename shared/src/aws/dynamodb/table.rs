//! Backups of any DynamoDB table: [`DynamoTable`] is a [`TableSource`] and [`TableSink`] whose
//! records are DynamoDB items in DynamoDB JSON (`{"pk":{"S":"..."}}`), with object keys and set
//! members sorted so that the same item always gives the same line: restore drills compare
//! content checksums across tables, which only works if serialisation is canonical. Scratch
//! tables for restore drills are created with the source table's key schema and indexes.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{
    AttributeValue, BillingMode, DeleteRequest, GlobalSecondaryIndex, IndexStatus,
    KeySchemaElement, LocalSecondaryIndex, Projection, ProvisionedThroughput,
    ProvisionedThroughputDescription, PutRequest, Select, TableStatus, WriteRequest,
};
use aws_sdk_dynamodb::Client;
use base64::Engine as _;
use serde_json::{Map, Value};

use crate::backup::tables::{
    ScanPage, ScratchTable, TableError, TableSink, TableSource, BACKOFF_MAX, BACKOFF_START,
    TABLE_WAIT, UNPROCESSED_ATTEMPTS,
};

/// DynamoDB's limit on requests in one `BatchWriteItem`.
const DYNAMO_BATCH: usize = 25;

// ---------------------------------------------------------------------------------------------
// DynamoDB

/// A backup source and restore target for any DynamoDB table; records are DynamoDB JSON.
#[derive(Debug, Clone)]
pub struct DynamoTable {
    client: Client,
    table: String,
    /// Items per Scan request; `None` lets DynamoDB fill 1 MB pages.
    page_size: Option<i32>,
}

fn dynamo_err<E>(operation: &'static str, table: &str, e: E) -> TableError
where
    E: std::error::Error + Send + Sync + 'static,
{
    TableError::Dynamo {
        operation,
        table: table.to_owned(),
        source: Box::new(e),
    }
}

impl DynamoTable {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoTable {
            client,
            table: table.into(),
            page_size: None,
        }
    }

    /// Builds the client from the standard AWS environment (honours `AWS_ENDPOINT_URL`).
    pub async fn from_env(table: impl Into<String>) -> Self {
        let config = crate::aws::sdk_config().await;
        Self::new(Client::new(&config), table)
    }

    /// Caps the items per Scan request (more, smaller pages; handy in tests).
    pub fn with_page_size(mut self, items: i32) -> Self {
        self.page_size = Some(items.max(1));
        self
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Creates `target` with the key schema, attribute definitions, secondary indexes and
    /// billing mode (with its capacities) of `source_table`, then waits until it and its
    /// indexes are ACTIVE.
    ///
    /// Not copied, on purpose: TTL (a restored table that starts expiring items at once would
    /// make a drill's count check race with DynamoDB; enable it after checking a restore),
    /// streams, tags, deletion protection and point-in-time recovery.
    pub async fn create_like(
        client: Client,
        source_table: &str,
        target: &str,
    ) -> Result<DynamoTable, TableError> {
        let described = client
            .describe_table()
            .table_name(source_table)
            .send()
            .await
            .map_err(|e| dynamo_err("DescribeTable", source_table, e.into_service_error()))?;
        let schema_err = |reason: String| TableError::Schema {
            table: source_table.to_owned(),
            reason,
        };
        let build_err = |e: aws_sdk_dynamodb::error::BuildError| schema_err(e.to_string());
        let desc = described
            .table()
            .ok_or_else(|| schema_err("DescribeTable returned no table".to_owned()))?;
        let provisioned = desc
            .billing_mode_summary()
            .and_then(|s| s.billing_mode())
            .map(|mode| *mode == BillingMode::Provisioned)
            // Tables created before billing modes existed report no summary; they are
            // provisioned if they have capacity.
            .unwrap_or_else(|| {
                desc.provisioned_throughput()
                    .and_then(|t| t.read_capacity_units())
                    .is_some_and(|r| r > 0)
            });
        let throughput = |t: Option<&ProvisionedThroughputDescription>| {
            let read = t.and_then(|t| t.read_capacity_units()).unwrap_or(1).max(1);
            let write = t.and_then(|t| t.write_capacity_units()).unwrap_or(1).max(1);
            ProvisionedThroughput::builder()
                .read_capacity_units(read)
                .write_capacity_units(write)
                .build()
        };
        let key_schema = |keys: &[KeySchemaElement]| keys.to_vec();

        let mut request = client
            .create_table()
            .table_name(target)
            .set_attribute_definitions(Some(desc.attribute_definitions().to_vec()))
            .set_key_schema(Some(key_schema(desc.key_schema())));
        request = if provisioned {
            request
                .billing_mode(BillingMode::Provisioned)
                .provisioned_throughput(
                    throughput(desc.provisioned_throughput()).map_err(build_err)?,
                )
        } else {
            request.billing_mode(BillingMode::PayPerRequest)
        };
        for gsi in desc.global_secondary_indexes() {
            let mut index = GlobalSecondaryIndex::builder()
                .set_index_name(gsi.index_name().map(str::to_owned))
                .set_key_schema(Some(key_schema(gsi.key_schema())))
                .projection(gsi.projection().cloned().unwrap_or_else(|| {
                    Projection::builder()
                        .projection_type(aws_sdk_dynamodb::types::ProjectionType::All)
                        .build()
                }));
            if provisioned {
                index = index.provisioned_throughput(
                    throughput(gsi.provisioned_throughput()).map_err(build_err)?,
                );
            }
            request = request.global_secondary_indexes(index.build().map_err(build_err)?);
        }
        for lsi in desc.local_secondary_indexes() {
            let index = LocalSecondaryIndex::builder()
                .set_index_name(lsi.index_name().map(str::to_owned))
                .set_key_schema(Some(key_schema(lsi.key_schema())))
                .set_projection(lsi.projection().cloned())
                .build()
                .map_err(build_err)?;
            request = request.local_secondary_indexes(index);
        }
        request
            .send()
            .await
            .map_err(|e| dynamo_err("CreateTable", target, e.into_service_error()))?;
        let table = DynamoTable::new(client, target);
        table.wait_until_active().await?;
        Ok(table)
    }

    async fn wait_until_active(&self) -> Result<(), TableError> {
        let deadline = tokio::time::Instant::now() + TABLE_WAIT;
        loop {
            let described = self
                .client
                .describe_table()
                .table_name(&self.table)
                .send()
                .await
                .map_err(|e| dynamo_err("DescribeTable", &self.table, e.into_service_error()))?;
            if let Some(table) = described.table() {
                let active = table.table_status() == Some(&TableStatus::Active)
                    && table.global_secondary_indexes().iter().all(|index| {
                        index
                            .index_status()
                            .is_none_or(|s| *s == IndexStatus::Active)
                    });
                if active {
                    return Ok(());
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(TableError::Timeout {
                    table: self.table.clone(),
                    state: "ACTIVE",
                });
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Whether DynamoDB knows the table (in any state).
    pub async fn exists(&self) -> Result<bool, TableError> {
        match self
            .client
            .describe_table()
            .table_name(&self.table)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_resource_not_found_exception()) =>
            {
                Ok(false)
            }
            Err(e) => Err(dynamo_err(
                "DescribeTable",
                &self.table,
                e.into_service_error(),
            )),
        }
    }

    /// Deletes the table and waits until DynamoDB no longer knows it. Deleting a table that
    /// does not exist succeeds.
    pub async fn delete_table(&self) -> Result<(), TableError> {
        match self
            .client
            .delete_table()
            .table_name(&self.table)
            .send()
            .await
        {
            Ok(_) => {}
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_resource_not_found_exception()) =>
            {
                return Ok(())
            }
            Err(e) => {
                return Err(dynamo_err(
                    "DeleteTable",
                    &self.table,
                    e.into_service_error(),
                ))
            }
        }
        let deadline = tokio::time::Instant::now() + TABLE_WAIT;
        loop {
            match self.exists().await? {
                false => return Ok(()),
                true if tokio::time::Instant::now() >= deadline => {
                    return Err(TableError::Timeout {
                        table: self.table.clone(),
                        state: "deleted",
                    })
                }
                true => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }

    fn decode_cursor(
        &self,
        cursor: Option<String>,
    ) -> Result<Option<HashMap<String, AttributeValue>>, TableError> {
        let bad = || TableError::BadCursor {
            table: self.table.clone(),
        };
        cursor
            .map(|c| {
                let value: Value = serde_json::from_str(&c).map_err(|_| bad())?;
                item_from_json(&value).map_err(|_| bad())
            })
            .transpose()
    }

    /// Scans (one segment, or all with `segment = None`), calling `visit` per page until it
    /// returns false or the scan ends.
    async fn scan_pages(
        &self,
        select_count: bool,
        mut visit: impl FnMut(i32, Vec<HashMap<String, AttributeValue>>) -> bool + Send,
    ) -> Result<(), TableError> {
        let mut start = None;
        loop {
            let mut request = self
                .client
                .scan()
                .table_name(&self.table)
                .consistent_read(true)
                .set_limit(self.page_size)
                .set_exclusive_start_key(start.take());
            if select_count {
                request = request.select(Select::Count);
            }
            let out = request
                .send()
                .await
                .map_err(|e| dynamo_err("Scan", &self.table, e.into_service_error()))?;
            let count = out.count();
            let next = out.last_evaluated_key.filter(|k| !k.is_empty());
            if !visit(count, out.items.unwrap_or_default()) {
                return Ok(());
            }
            match next {
                Some(key) => start = Some(key),
                None => return Ok(()),
            }
        }
    }

    async fn batch_write(&self, mut requests: Vec<WriteRequest>) -> Result<(), TableError> {
        let mut delay = BACKOFF_START;
        for attempt in 1..=UNPROCESSED_ATTEMPTS {
            let out = self
                .client
                .batch_write_item()
                .request_items(&self.table, requests)
                .send()
                .await
                .map_err(|e| dynamo_err("BatchWriteItem", &self.table, e.into_service_error()))?;
            requests = out
                .unprocessed_items
                .and_then(|mut u| u.remove(&self.table))
                .unwrap_or_default();
            if requests.is_empty() {
                return Ok(());
            }
            if attempt < UNPROCESSED_ATTEMPTS {
                // DynamoDB returns unprocessed items when throttled; back off before retrying.
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(BACKOFF_MAX);
            }
        }
        Err(TableError::Unprocessed {
            table: self.table.clone(),
            items: requests.len(),
        })
    }
}

#[async_trait]
impl TableSource for DynamoTable {
    fn name(&self) -> &str {
        &self.table
    }

    async fn scan_segment(
        &self,
        segment: u32,
        total: u32,
        cursor: Option<String>,
    ) -> Result<ScanPage, TableError> {
        let schema_err = |reason: String| TableError::Schema {
            table: self.table.clone(),
            reason,
        };
        let (segment, total) = (
            i32::try_from(segment).map_err(|_| schema_err(format!("segment {segment}")))?,
            i32::try_from(total).map_err(|_| schema_err(format!("total segments {total}")))?,
        );
        let out = self
            .client
            .scan()
            .table_name(&self.table)
            .segment(segment)
            .total_segments(total)
            .set_limit(self.page_size)
            .set_exclusive_start_key(self.decode_cursor(cursor)?)
            .send()
            .await
            .map_err(|e| dynamo_err("Scan", &self.table, e.into_service_error()))?;
        let records = out
            .items()
            .iter()
            .map(|item| item_to_json(item).map(|v| v.to_string()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|reason| TableError::BadRecord {
                table: self.table.clone(),
                index: 0,
                expected: "DynamoDB item",
                reason,
            })?;
        let next = match out.last_evaluated_key() {
            Some(key) if !key.is_empty() => Some(
                item_to_json(key)
                    .map_err(|_| TableError::BadCursor {
                        table: self.table.clone(),
                    })?
                    .to_string(),
            ),
            _ => None,
        };
        Ok((records, next))
    }
}

#[async_trait]
impl TableSink for DynamoTable {
    fn name(&self) -> &str {
        &self.table
    }

    async fn is_empty(&self) -> Result<bool, TableError> {
        let mut empty = true;
        self.scan_pages(true, |count, _| {
            empty = count == 0;
            empty
        })
        .await?;
        Ok(empty)
    }

    async fn write_batch(&self, records: Vec<String>) -> Result<(), TableError> {
        let requests = records
            .iter()
            .enumerate()
            .map(|(index, record)| {
                let bad = |reason: String| TableError::BadRecord {
                    table: self.table.clone(),
                    index,
                    expected: "DynamoDB item",
                    reason,
                };
                let value: Value = serde_json::from_str(record).map_err(|e| bad(e.to_string()))?;
                let item = item_from_json(&value).map_err(bad)?;
                let put = PutRequest::builder()
                    .set_item(Some(item))
                    .build()
                    .map_err(|e| bad(e.to_string()))?;
                Ok(WriteRequest::builder().put_request(put).build())
            })
            .collect::<Result<Vec<_>, TableError>>()?;
        let mut requests = requests.into_iter().peekable();
        while requests.peek().is_some() {
            let batch: Vec<WriteRequest> = requests.by_ref().take(DYNAMO_BATCH).collect();
            self.batch_write(batch).await?;
        }
        Ok(())
    }

    async fn count(&self) -> Result<u64, TableError> {
        let mut total = 0u64;
        self.scan_pages(true, |count, _| {
            total += u64::try_from(count).unwrap_or(0);
            true
        })
        .await?;
        Ok(total)
    }

    /// Deletes every item, by the table's key attributes (from `DescribeTable`): a scan, then
    /// `BatchWriteItem` deletes of at most 25 keys each.
    async fn clear(&self) -> Result<bool, TableError> {
        let described = self
            .client
            .describe_table()
            .table_name(&self.table)
            .send()
            .await
            .map_err(|e| dynamo_err("DescribeTable", &self.table, e.into_service_error()))?;
        let key_names: Vec<String> = described
            .table()
            .map(|t| {
                t.key_schema()
                    .iter()
                    .map(|k| k.attribute_name().to_owned())
                    .collect()
            })
            .unwrap_or_default();
        if key_names.is_empty() {
            return Err(TableError::Schema {
                table: self.table.clone(),
                reason: "DescribeTable returned no key schema".to_owned(),
            });
        }
        let mut keys = Vec::new();
        self.scan_pages(false, |_, items| {
            for mut item in items {
                let key: HashMap<String, AttributeValue> = key_names
                    .iter()
                    .filter_map(|name| item.remove(name).map(|v| (name.clone(), v)))
                    .collect();
                keys.push(key);
            }
            true
        })
        .await?;
        let mut requests = Vec::with_capacity(keys.len());
        for key in keys {
            let delete = DeleteRequest::builder()
                .set_key(Some(key))
                .build()
                .map_err(|e| TableError::Schema {
                    table: self.table.clone(),
                    reason: e.to_string(),
                })?;
            requests.push(WriteRequest::builder().delete_request(delete).build());
        }
        let mut requests = requests.into_iter().peekable();
        while requests.peek().is_some() {
            let batch: Vec<WriteRequest> = requests.by_ref().take(DYNAMO_BATCH).collect();
            self.batch_write(batch).await?;
        }
        Ok(true)
    }
}

#[async_trait]
impl ScratchTable for DynamoTable {
    async fn discard(&self) -> Result<(), TableError> {
        self.delete_table().await
    }
}

// ---------------------------------------------------------------------------------------------
// DynamoDB JSON

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn sorted<T: Ord>(mut values: Vec<T>) -> Vec<T> {
    values.sort();
    values
}

fn tagged(tag: &str, value: Value) -> Value {
    let mut map = Map::new();
    map.insert(tag.to_owned(), value);
    Value::Object(map)
}

/// A DynamoDB item as DynamoDB JSON, attribute names in sorted order.
pub fn item_to_json(item: &HashMap<String, AttributeValue>) -> Result<Value, String> {
    let sorted: BTreeMap<&String, &AttributeValue> = item.iter().collect();
    let mut map = Map::new();
    for (name, value) in sorted {
        map.insert(name.clone(), attribute_to_json(value)?);
    }
    Ok(Value::Object(map))
}

/// One attribute value as DynamoDB JSON (`{"S":"x"}`); set members are sorted, binary is
/// base64.
pub fn attribute_to_json(value: &AttributeValue) -> Result<Value, String> {
    Ok(match value {
        AttributeValue::S(s) => tagged("S", Value::String(s.clone())),
        AttributeValue::N(n) => tagged("N", Value::String(n.clone())),
        AttributeValue::B(b) => tagged("B", Value::String(b64(b.as_ref()))),
        AttributeValue::Bool(b) => tagged("BOOL", Value::Bool(*b)),
        AttributeValue::Null(_) => tagged("NULL", Value::Bool(true)),
        AttributeValue::L(list) => tagged(
            "L",
            Value::Array(
                list.iter()
                    .map(attribute_to_json)
                    .collect::<Result<_, _>>()?,
            ),
        ),
        AttributeValue::M(map) => tagged("M", item_to_json(map)?),
        AttributeValue::Ss(set) => tagged(
            "SS",
            Value::Array(sorted(set.clone()).into_iter().map(Value::String).collect()),
        ),
        AttributeValue::Ns(set) => tagged(
            "NS",
            Value::Array(sorted(set.clone()).into_iter().map(Value::String).collect()),
        ),
        AttributeValue::Bs(set) => tagged(
            "BS",
            Value::Array(
                sorted(set.iter().map(|b| b64(b.as_ref())).collect())
                    .into_iter()
                    .map(Value::String)
                    .collect(),
            ),
        ),
        _ => return Err("an attribute of a type this build does not know".to_owned()),
    })
}

/// A DynamoDB item from DynamoDB JSON.
pub fn item_from_json(value: &Value) -> Result<HashMap<String, AttributeValue>, String> {
    let Value::Object(map) = value else {
        return Err("an item must be a JSON object".to_owned());
    };
    map.iter()
        .map(|(name, v)| {
            attribute_from_json(v)
                .map(|a| (name.clone(), a))
                .map_err(|e| format!("attribute {name:?}: {e}"))
        })
        .collect()
}

/// One attribute value from DynamoDB JSON.
pub fn attribute_from_json(value: &Value) -> Result<AttributeValue, String> {
    let Value::Object(map) = value else {
        return Err("an attribute value must be a JSON object".to_owned());
    };
    let mut entries = map.iter();
    let (Some((tag, inner)), None) = (entries.next(), entries.next()) else {
        return Err("an attribute value must have exactly one type tag".to_owned());
    };
    let string = |v: &Value| {
        v.as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("{tag} needs a string"))
    };
    let strings = |v: &Value| -> Result<Vec<String>, String> {
        v.as_array()
            .ok_or_else(|| format!("{tag} needs an array"))?
            .iter()
            .map(string)
            .collect()
    };
    let blob = |s: String| {
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .map(Blob::new)
            .map_err(|e| format!("{tag} is not base64: {e}"))
    };
    Ok(match tag.as_str() {
        "S" => AttributeValue::S(string(inner)?),
        "N" => AttributeValue::N(string(inner)?),
        "B" => AttributeValue::B(blob(string(inner)?)?),
        "BOOL" => AttributeValue::Bool(inner.as_bool().ok_or("BOOL needs true or false")?),
        "NULL" => AttributeValue::Null(inner.as_bool().ok_or("NULL needs true")?),
        "L" => AttributeValue::L(
            inner
                .as_array()
                .ok_or("L needs an array")?
                .iter()
                .map(attribute_from_json)
                .collect::<Result<_, _>>()?,
        ),
        "M" => AttributeValue::M(item_from_json(inner)?),
        "SS" => AttributeValue::Ss(strings(inner)?),
        "NS" => AttributeValue::Ns(strings(inner)?),
        "BS" => AttributeValue::Bs(
            strings(inner)?
                .into_iter()
                .map(blob)
                .collect::<Result<_, _>>()?,
        ),
        other => return Err(format!("unknown type tag {other:?}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dynamodb_json_round_trips_every_attribute_type_canonically() {
        let item = HashMap::from([
            (
                "s".to_owned(),
                AttributeValue::S("text\nwith newline".into()),
            ),
            ("n".to_owned(), AttributeValue::N("-12.5".into())),
            (
                "b".to_owned(),
                AttributeValue::B(Blob::new(vec![0, 1, 255])),
            ),
            ("t".to_owned(), AttributeValue::Bool(true)),
            ("z".to_owned(), AttributeValue::Null(true)),
            (
                "l".to_owned(),
                AttributeValue::L(vec![
                    AttributeValue::N("1".into()),
                    AttributeValue::S("x".into()),
                ]),
            ),
            (
                "m".to_owned(),
                AttributeValue::M(HashMap::from([
                    ("inner".to_owned(), AttributeValue::Bool(false)),
                    (
                        "a".to_owned(),
                        AttributeValue::Ss(vec!["y".into(), "x".into()]),
                    ),
                ])),
            ),
            (
                "ss".to_owned(),
                AttributeValue::Ss(vec!["b".into(), "a".into()]),
            ),
            (
                "ns".to_owned(),
                AttributeValue::Ns(vec!["2".into(), "10".into()]),
            ),
            (
                "bs".to_owned(),
                AttributeValue::Bs(vec![Blob::new(vec![9]), Blob::new(vec![1])]),
            ),
        ]);
        let json = item_to_json(&item).unwrap();
        let line = json.to_string();
        assert!(!line.contains('\n'));
        assert_eq!(json["ss"], serde_json::json!({"SS": ["a", "b"]}));
        assert_eq!(json["b"], serde_json::json!({"B": "AAH/"}));
        assert_eq!(json["z"], serde_json::json!({"NULL": true}));
        assert!(line.starts_with(r#"{"b":"#), "attributes sorted: {line}");

        let back = item_from_json(&serde_json::from_str(&line).unwrap()).unwrap();
        // Sets come back sorted; everything else exactly.
        assert_eq!(back.len(), item.len());
        assert_eq!(back["s"], item["s"]);
        assert_eq!(back["b"], item["b"]);
        assert_eq!(back["l"], item["l"]);
        assert_eq!(back["ss"], AttributeValue::Ss(vec!["a".into(), "b".into()]));
        assert_eq!(item_to_json(&back).unwrap().to_string(), line);
    }

    #[test]
    fn dynamodb_json_refuses_malformed_attributes() {
        for bad in [
            r#"{"a":"plain"}"#,
            r#"{"a":{"S":"x","N":"1"}}"#,
            r#"{"a":{"Q":"x"}}"#,
            r#"{"a":{"B":"%%%"}}"#,
            r#"{"a":{"SS":[1]}}"#,
            r#"[1]"#,
        ] {
            let value: Value = serde_json::from_str(bad).unwrap();
            assert!(item_from_json(&value).is_err(), "{bad}");
        }
    }
}
