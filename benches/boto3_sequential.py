"""Reads N secrets one after another with boto3 and prints the elapsed seconds.

This is how OpenMetadata's Python ingestion resolves secrets: one boto3
client, one get_secret_value call per secret field, in sequence. Used by
benches/secret_resolution.rs as the baseline.

Usage: boto3_sequential.py ENDPOINT_URL NAME_PREFIX COUNT
"""

import sys
import time

import boto3


def main() -> None:
    endpoint, prefix, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    client = boto3.client(
        "secretsmanager",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    # The first call loads the service model and opens the connection.
    client.get_secret_value(SecretId=f"{prefix}0")
    started = time.perf_counter()
    for index in range(count):
        client.get_secret_value(SecretId=f"{prefix}{index}")["SecretString"]
    print(time.perf_counter() - started)


if __name__ == "__main__":
    main()
