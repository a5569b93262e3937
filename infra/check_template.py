#!/usr/bin/env python3
"""Least-privilege checks on the SAM template that cfn-lint does not make.

Usage: .venv/bin/python infra/check_template.py [TEMPLATE]   (default: template.yaml)

Needs cfn-lint (in .venv), whose decoder reads the `!Ref`/`!GetAtt`/`!Sub` short forms. Prints
one line per failed check and exits 1 if any failed. It asserts:

- Keys: the backup key (the one BackupBucket's SSE-KMS and SHIPGATE_KMS_KEY_ID name) encrypts no
  SNS topic, and its key policy admits no AWS service.
- KMS grants: each function's KMS statements allow only kms:GenerateDataKey and kms:Decrypt, on
  keys of this stack (never "*"), and name exactly the keys the function needs: the key of each
  topic it may sns:Publish to, of each queue it may sqs:ReceiveMessage from (when that queue is
  KMS-encrypted), and of the backups it writes (SHIPGATE_KMS_KEY_ID, the bucket's SSE-KMS). The
  webhook functions do not reference the backup key at all.
- Secrets: each function may secretsmanager:GetSecretValue exactly the secrets its
  SHIPGATE_SECRETS_* variables name, each as `...:secret:${Parameter}-??????`; only
  github-webhook reads the GitHub webhook secret (not slack-approval, not alert-webhook), and
  every function that loads a GitHub secret loads the App secret.
- Key policies: every statement for an AWS service principal carries aws:SourceAccount equal to
  the stack's account; CloudWatch's statement, on the key of the topics alarms publish to, also
  carries aws:SourceArn limited to this account's and region's alarms.
- Backups: the backup bucket's lifecycle never expires current objects (retention is the
  policy's, applied by the backup job's prune); a role that may s3:GetObject in a versioned
  bucket may also s3:GetObjectVersion (a restore reads the version it verified).
"""

import re
import sys
from pathlib import Path

from cfnlint.decode import decode

# Functions that serve webhooks: they publish notifications and never touch backups.
WEBHOOK_FUNCTIONS = ("GithubWebhookFunction", "SlackApprovalFunction", "AlertWebhookFunction")
# The secret only the GitHub webhook function reads, and the App secret.
WEBHOOK_SECRET_PARAMETER = "GithubWebhookSecretName"
WEBHOOK_SECRET_READER = "GithubWebhookFunction"
APP_SECRET_PARAMETER = "GithubAppSecretName"
# The topic users point their own CloudWatch alarms at (besides the stack's own alarms' topics).
USER_ALARMS_TOPIC = "AlarmsTopic"

KMS_ACTIONS = {"kms:generatedatakey", "kms:decrypt"}
SECRET_ARN = re.compile(
    r"^arn:\$\{AWS::Partition\}:secretsmanager:\$\{AWS::Region\}:\$\{AWS::AccountId\}"
    r":secret:\$\{(\w+)\}-\?{6}$"
)
ALARM_ARN_PREFIX = "arn:${AWS::Partition}:cloudwatch:${AWS::Region}:${AWS::AccountId}:alarm:"
SUB_VAR = re.compile(r"\$\{([^}!][^}]*)\}")


def refs(node) -> set:
    """Logical ids and parameters a node references (Ref, GetAtt, Sub), pseudo-parameters
    excluded."""
    found = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "Ref" and isinstance(value, str):
                found.add(value)
            elif key == "Fn::GetAtt":
                target = value[0] if isinstance(value, list) else str(value).split(".")[0]
                found.add(target)
            elif key == "Fn::Sub":
                text, mapping = (value[0], value[1]) if isinstance(value, list) else (value, {})
                found |= {m.split(".")[0] for m in SUB_VAR.findall(text)} - set(mapping)
                found |= refs(mapping)
            else:
                found |= refs(value)
    elif isinstance(node, list):
        for item in node:
            found |= refs(item)
    return {r for r in found if not r.startswith("AWS::")}


def as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def statements(document) -> list:
    """The statements of a policy document, both branches of an Fn::If included."""
    out = []
    for statement in as_list(document.get("Statement", [])):
        if isinstance(statement, dict) and "Fn::If" in statement:
            out += [s for s in statement["Fn::If"][1:] if isinstance(s, dict) and "Ref" not in s]
        else:
            out.append(statement)
    return out


def actions(statement) -> list:
    return [a.lower() for a in as_list(statement.get("Action", [])) if isinstance(a, str)]


def touches(statement, service: str, action: str = "") -> bool:
    """Whether a statement's actions may include `service:action` (any action of the service
    when `action` is empty), wildcards included."""
    for a in actions(statement):
        if a == "*" or a == f"{service}:*":
            return True
        if a.startswith(f"{service}:") and (not action or re.fullmatch(
                a.replace("*", ".*"), f"{service}:{action}".lower())):
            return True
    return False


def condition_value(statement, key: str) -> list:
    """Values of condition key `key` (case-insensitive) under any operator."""
    out = []
    for operator in (statement.get("Condition") or {}).values():
        for name, value in operator.items():
            if name.lower() == key.lower():
                out += as_list(value)
    return out


def check(path: Path) -> list:
    template, errors = decode(str(path))
    if errors or template is None:
        return [f"cannot parse {path}: {e}" for e in errors] or [f"cannot parse {path}"]
    resources = template.get("Resources", {})
    parameters = template.get("Parameters", {})
    failures = []

    def of_type(kind):
        return {name: r for name, r in resources.items() if r.get("Type") == kind}

    keys = set(of_type("AWS::KMS::Key"))
    topics = of_type("AWS::SNS::Topic")
    queues = of_type("AWS::SQS::Queue")
    buckets = of_type("AWS::S3::Bucket")
    functions = of_type("AWS::Serverless::Function")
    global_env = (template.get("Globals", {}).get("Function", {}).get("Environment", {})
                  .get("Variables", {}))

    def env(function) -> dict:
        own = function.get("Properties", {}).get("Environment", {}).get("Variables", {})
        return {**global_env, **own}

    topic_keys = {name: refs(t.get("Properties", {}).get("KmsMasterKeyId")) & keys
                  for name, t in topics.items()}
    queue_keys = {name: refs(q.get("Properties", {}).get("KmsMasterKeyId")) & keys
                  for name, q in queues.items()}
    bucket_keys = {
        name: refs(b.get("Properties", {}).get("BucketEncryption")) & keys
        for name, b in buckets.items()
    }

    # The backup key: what the backup bucket and SHIPGATE_KMS_KEY_ID name.
    backup_keys = set()
    for keyset in bucket_keys.values():
        backup_keys |= keyset
    for function in functions.values():
        backup_keys |= refs(env(function).get("SHIPGATE_KMS_KEY_ID")) & keys
    if not backup_keys:
        failures.append("no backup key found (BackupBucket SSE-KMS or SHIPGATE_KMS_KEY_ID)")
    for topic, keyset in topic_keys.items():
        if keyset & backup_keys:
            failures.append(f"{topic} is encrypted with the backup key {sorted(keyset)}")

    # KMS grants per function.
    for name, function in sorted(functions.items()):
        props = function.get("Properties", {})
        function_env = env(function)
        needed = refs(function_env.get("SHIPGATE_KMS_KEY_ID")) & keys
        granted = set()
        secret_params = set()
        for var, value in function_env.items():
            if var == "SHIPGATE_SECRETS" or var.startswith("SHIPGATE_SECRETS_"):
                named = refs(value) & set(parameters)
                if not named:
                    failures.append(f"{name}: {var} names no template parameter")
                secret_params |= named
        readable_secrets = set()
        for policy in as_list(props.get("Policies", [])):
            if not isinstance(policy, dict) or "Statement" not in policy:
                failures.append(f"{name}: policy {policy!r} is not an inline policy document "
                                "this check can read")
                continue
            for statement in statements(policy):
                if statement.get("Effect") != "Allow":
                    continue
                resource = as_list(statement.get("Resource", []))
                named = refs(resource)
                if touches(statement, "sns", "Publish"):
                    for topic in named & set(topics):
                        needed |= topic_keys[topic]
                if touches(statement, "sqs", "ReceiveMessage"):
                    for queue in named & set(queues):
                        needed |= queue_keys[queue]
                if touches(statement, "s3", "PutObject") or touches(statement, "s3", "GetObject"):
                    for bucket in named & set(buckets):
                        needed |= bucket_keys[bucket]
                if touches(statement, "kms"):
                    extra = sorted(set(actions(statement)) - KMS_ACTIONS)
                    if extra:
                        failures.append(f"{name}: KMS actions beyond GenerateDataKey/Decrypt: "
                                        f"{extra}")
                    for item in resource:
                        item_keys = refs(item) & keys
                        if not item_keys:
                            failures.append(f"{name}: KMS statement {statement.get('Sid')!r} "
                                            f"on {item!r}, not a key of this stack")
                        granted |= item_keys
                if touches(statement, "secretsmanager", "GetSecretValue"):
                    for item in resource:
                        text = item.get("Fn::Sub") if isinstance(item, dict) else None
                        match = SECRET_ARN.match(text) if isinstance(text, str) else None
                        if not match:
                            failures.append(f"{name}: GetSecretValue on {item!r}, not one "
                                            "secret named by a parameter")
                            continue
                        readable_secrets.add(match.group(1))
        for key in sorted(granted - needed):
            failures.append(f"{name} may use KMS key {key}, which it does not need")
        for key in sorted(needed - granted):
            failures.append(f"{name} needs KMS key {key} (it publishes to, reads or writes "
                            "something encrypted with it) but may not use it")
        if name in WEBHOOK_FUNCTIONS and refs(props) & backup_keys:
            failures.append(f"{name} references the backup key {sorted(refs(props) & backup_keys)}")

        # Secrets per function.
        for param in sorted(readable_secrets - secret_params):
            failures.append(f"{name} may read secret {param} but no SHIPGATE_SECRETS_* names it")
        for param in sorted(secret_params - readable_secrets):
            failures.append(f"{name} loads secret {param} but may not read it")
        reads = secret_params | readable_secrets
        if WEBHOOK_SECRET_PARAMETER in reads and name != WEBHOOK_SECRET_READER:
            failures.append(f"{name} may read the GitHub webhook secret "
                            f"({WEBHOOK_SECRET_PARAMETER}); only {WEBHOOK_SECRET_READER} may")
        if WEBHOOK_SECRET_PARAMETER in reads and APP_SECRET_PARAMETER not in reads:
            failures.append(f"{name} reads the GitHub webhook secret but not the App secret")
    for param in (WEBHOOK_SECRET_PARAMETER, APP_SECRET_PARAMETER):
        if param not in parameters:
            failures.append(f"parameter {param} is missing (update {Path(__file__).name} if "
                            "it was renamed)")

    # Key policies.
    alarm_topics = {USER_ALARMS_TOPIC} & set(topics)
    for alarm in of_type("AWS::CloudWatch::Alarm").values():
        alarm_props = alarm.get("Properties", {})
        for field in ("AlarmActions", "OKActions", "InsufficientDataActions"):
            alarm_topics |= refs(alarm_props.get(field)) & set(topics)
    alarm_keys = set().union(*(topic_keys[t] for t in alarm_topics)) if alarm_topics else set()
    for key in sorted(keys):
        policy = resources[key].get("Properties", {}).get("KeyPolicy", {})
        cloudwatch = False
        for statement in statements(policy):
            services = as_list((statement.get("Principal") or {}).get("Service", []))
            if not services:
                continue
            sid = statement.get("Sid", "?")
            if key in backup_keys:
                failures.append(f"{key} (backup key) admits AWS service {services} ({sid})")
            account = condition_value(statement, "aws:SourceAccount")
            if account != [{"Ref": "AWS::AccountId"}]:
                failures.append(f"{key}: statement {sid} for {services} has no aws:SourceAccount "
                                "condition equal to the stack's account")
            if "cloudwatch.amazonaws.com" in services:
                cloudwatch = True
                arns = condition_value(statement, "aws:SourceArn")
                texts = [a.get("Fn::Sub") if isinstance(a, dict) else a for a in arns]
                if not texts or not all(
                        isinstance(t, str) and t.startswith(ALARM_ARN_PREFIX) for t in texts):
                    failures.append(f"{key}: CloudWatch statement {sid} has no aws:SourceArn "
                                    f"condition limited to {ALARM_ARN_PREFIX}*")
        if key in alarm_keys and not cloudwatch:
            failures.append(f"{key} encrypts a topic alarms publish to but its policy has no "
                            "CloudWatch statement")
    failures.extend(check_backup_lifecycle(resources))
    failures.extend(check_versioned_reads(resources))
    return failures


def check_versioned_reads(resources: dict) -> list:
    """A restore reads the version of each backup object it verified: every role that may
    s3:GetObject in a versioned bucket also needs s3:GetObjectVersion (docs/backups.md)."""
    failures = []
    versioned = {
        name for name, r in resources.items()
        if r.get("Type") == "AWS::S3::Bucket"
        and ((r.get("Properties") or {}).get("VersioningConfiguration") or {}).get("Status")
        == "Enabled"
    }
    for name, resource in resources.items():
        policies = (resource.get("Properties") or {}).get("Policies") or []
        for policy in as_list(policies):
            if not isinstance(policy, dict):
                continue
            for statement in statements(policy):
                acts = {a.lower() for a in actions(statement)}
                if "s3:getobject" not in acts or "s3:getobjectversion" in acts:
                    continue
                if refs(statement.get("Resource")) & versioned:
                    failures.append(f"{name}: statement {statement.get('Sid', '?')} may "
                                    "s3:GetObject in a versioned bucket but not "
                                    "s3:GetObjectVersion, which a restore's pinned read needs")
    return failures


def check_backup_lifecycle(resources: dict) -> list:
    """The bucket never expires current backups: retention is the policy's (prune keeps the
    newest good backup and the `keep_daily` days), and a lifecycle expiry would overrule it
    (docs/backups.md, "Retention")."""
    failures = []
    for name, resource in resources.items():
        if resource.get("Type") != "AWS::S3::Bucket" or name != "BackupBucket":
            continue
        rules = ((resource.get("Properties") or {}).get("LifecycleConfiguration") or {}).get(
            "Rules", [])
        for rule in rules:
            for key in ("ExpirationInDays", "ExpirationDate"):
                if key in rule:
                    failures.append(f"{name}: lifecycle rule {rule.get('Id', '?')} sets {key}; "
                                    "current backups are kept or deleted by the policy's "
                                    "[backups] retention, not by the bucket")
    return failures


def main() -> int:
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "template.yaml")
    failures = check(path)
    if failures:
        print(f"{path}: {len(failures)} least-privilege check(s) failed:", file=sys.stderr)
        for failure in failures:
            print(f"  - {failure}", file=sys.stderr)
        return 1
    print(f"{path}: key, grant, secret and key-policy checks passed", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
