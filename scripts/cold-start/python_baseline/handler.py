"""Python/boto3 baseline for scripts/cold-start/run.py: the github-webhook function's front door.

Does what the Rust function does before it dispatches an event: checks the
`x-hub-signature-256` HMAC over the exact body, parses the JSON, and claims the delivery id
with a conditional DynamoDB PutItem (the same `IDEM#github#<delivery>` item the Rust
`Repo::claim_event` writes). It stops there: no policy evaluation, no SNS publish, so it does
strictly less work per invocation than the Rust function it is compared with.

As in a typical Python Lambda, the client is built at import time (the init phase) and the
webhook secret comes from the environment, or from Secrets Manager when
SHIPGATE_SECRETS names a secret (as the Rust bootstrap does).
"""

import base64
import hashlib
import hmac
import json
import os
import time

import boto3
from botocore.exceptions import ClientError

DELIVERY_TTL_SECONDS = 7 * 24 * 3600


def _webhook_secret() -> bytes:
    name = os.environ.get("SHIPGATE_SECRETS", "").split(",")[0].strip()
    if name:
        value = boto3.client("secretsmanager").get_secret_value(SecretId=name)
        return json.loads(value["SecretString"])["SHIPGATE_GITHUB_WEBHOOK_SECRET"].encode()
    return os.environ["SHIPGATE_GITHUB_WEBHOOK_SECRET"].encode()


SECRET = _webhook_secret()
TABLE = os.environ["SHIPGATE_TABLE"]
DYNAMODB = boto3.client("dynamodb")


def _answer(status: int, message: str, **extra) -> dict:
    return {
        "statusCode": status,
        "headers": {"content-type": "application/json"},
        "body": json.dumps({"message": message, **extra}),
    }


def handler(event, context):
    headers = {k.lower(): v for k, v in (event.get("headers") or {}).items()}
    body = event.get("body") or ""
    raw = base64.b64decode(body) if event.get("isBase64Encoded") else body.encode()

    expected = "sha256=" + hmac.new(SECRET, raw, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, headers.get("x-hub-signature-256", "")):
        return _answer(401, "bad signature")
    delivery = headers.get("x-github-delivery", "")
    kind = headers.get("x-github-event", "")
    if not delivery or not kind:
        return _answer(400, "missing X-GitHub-Delivery or X-GitHub-Event")
    try:
        payload = json.loads(raw)
    except ValueError:
        return _answer(400, "body is not JSON")

    now = int(time.time())
    try:
        DYNAMODB.put_item(
            TableName=TABLE,
            Item={
                "pk": {"S": f"IDEM#github#{delivery}"},
                "sk": {"S": "IDEM"},
                "version": {"N": "1"},
                "expires_at": {"N": str(now + DELIVERY_TTL_SECONDS)},
                "data": {"S": json.dumps({"at": now})},
            },
            ConditionExpression="attribute_not_exists(pk)",
        )
    except ClientError as e:
        if e.response["Error"]["Code"] == "ConditionalCheckFailedException":
            return _answer(200, "duplicate delivery ignored", duplicate=True)
        raise
    return _answer(202, f"{kind} {payload.get('action', '')} accepted")
