#!/usr/bin/env python3
"""Read documents back with the official Python SDK (azure-cosmos).

A cross-check for tests: what the Rust service wrote is read by another,
independent Cosmos DB client, as Azure would serve it.

  read_back.py --endpoint URL --database D --container C --id ID --partition-key PK
      prints the document as JSON; exit 3 (message on stderr) if not found.
  read_back.py --endpoint URL --database D --container C --list-ids [--partition-key PK]
      prints a sorted JSON array of the ids of all documents in the container
      (read feed over all partitions; duplicates are kept so tests can see them),
      or only those whose partition key value equals PK.

Exit codes: 0 ok, 1 other error, 2 usage, 3 not found (document, container or
database). TLS verification is off, for the loopback test server only.
"""

import argparse
import json
import sys
import warnings

# The loopback server's certificate is self-signed (and expired): silence
# urllib3's InsecureRequestWarning, which would otherwise go to stderr.
warnings.filterwarnings("ignore", message="Unverified HTTPS request")

from azure.core.exceptions import AzureError  # noqa: E402
from azure.cosmos import CosmosClient  # noqa: E402
from azure.cosmos.exceptions import (  # noqa: E402
    CosmosHttpResponseError,
    CosmosResourceNotFoundError,
)

# The well-known Cosmos DB emulator key; the test server accepts any key.
EMULATOR_KEY = "C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw/Jw=="


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--endpoint", required=True, help="e.g. https://127.0.0.1:PORT/")
    p.add_argument("--database", default="ragchat")
    p.add_argument("--container", default="turns")
    p.add_argument("--key", default=EMULATOR_KEY)
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--id", help="point-read this document id")
    mode.add_argument(
        "--list-ids",
        "--query-count",
        dest="list_ids",
        action="store_true",
        help="print a JSON array of all document ids",
    )
    p.add_argument(
        "--partition-key",
        help="partition key value (required with --id; a filter with --list-ids)",
    )
    p.add_argument("--timeout", type=float, default=10.0, help="connection timeout, seconds")
    args = p.parse_args(argv)
    if args.id is not None and args.partition_key is None:
        p.error("--id needs --partition-key")
    return args


def get_value(doc, path):
    """Value at a partition key path like '/conversation_id' or '/a/b'."""
    cur = doc
    for part in path.strip("/").split("/"):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


def main(argv=None):
    args = parse_args(argv)
    try:
        client = CosmosClient(
            args.endpoint,
            credential=args.key,
            connection_verify=False,
            connection_timeout=args.timeout,
        )
        container = client.get_database_client(args.database).get_container_client(args.container)
        if args.id is not None:
            doc = container.read_item(item=args.id, partition_key=args.partition_key)
            print(json.dumps(doc, sort_keys=True))
            return 0
        items = list(container.read_all_items())
        if args.partition_key is not None:
            paths = container.read().get("partitionKey", {}).get("paths") or ["/id"]
            items = [d for d in items if get_value(d, paths[0]) == args.partition_key]
        print(json.dumps(sorted(d.get("id") for d in items)))
        return 0
    except CosmosResourceNotFoundError as e:
        what = (
            f"document {args.id!r} (partition key {args.partition_key!r})"
            if args.id is not None
            else f"container {args.database}/{args.container}"
        )
        print(f"not found: {what} at {args.endpoint}: {e.message}", file=sys.stderr)
        return 3
    except CosmosHttpResponseError as e:
        print(f"cosmos error {e.status_code}: {e.message}", file=sys.stderr)
        return 1
    except AzureError as e:  # connection refused/reset, timeouts
        print(f"cannot reach {args.endpoint}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
