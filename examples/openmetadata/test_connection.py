"""Run an OpenMetadata test-connection automation workflow from a file.

The `metadata` CLI has no command for automation workflows, and the
ingestion package's own entry point (`metadata.automations.execute_runner`)
reloads the workflow from the server, where the hybrid runner keeps no
secrets. This script runs the workflow as written in the file the runner
resolved, reports each step to the server as the package does, and exits
with status 1 when a mandatory step fails.

Usage: python test_connection.py CONFIG_FILE   (YAML or JSON)
"""

import sys

import yaml
from metadata.generated.schema.entity.automations.workflow import Workflow
from metadata.generated.schema.entity.services.connections.testConnectionResult import (
    StatusType,
)
from metadata.ingestion.connections.test_connections import (
    raise_test_connection_exception,
)
from metadata.ingestion.ometa.ometa_api import OpenMetadata
from metadata.ingestion.source.connections import (
    create_connection,
    get_connection,
    get_test_connection_fn,
)


def for_reporting(workflow: Workflow) -> Workflow:
    """Return a copy of the workflow with every secret masked.

    The package reports step results through this object. After an
    unexpected error it sends the whole workflow request back to the server
    with secrets in clear text (the CreateWorkflowRequest fallback in
    metadata/ingestion/connections/test_connections.py), so only the
    connection itself gets the resolved values.
    """
    return Workflow.model_validate(workflow.model_dump(mode="json", mask_secrets=True))


def run(workflow: Workflow, metadata: OpenMetadata):
    """Run the test connection steps and return the result."""
    config = workflow.request.connection.config
    reporting = for_reporting(workflow)
    owned = create_connection(config)
    if owned is not None:
        with owned:
            return owned.test_connection(metadata, automation_workflow=reporting)
    # Connectors without a connection class expose a module-level function.
    test_fn = get_test_connection_fn(config)
    return test_fn(metadata, get_connection(config), config, automation_workflow=reporting)


def main(path: str) -> int:
    with open(path, encoding="utf-8") as file:
        workflow = Workflow.model_validate(yaml.safe_load(file))
    metadata = OpenMetadata(config=workflow.openMetadataServerConnection)
    result = run(workflow, metadata)
    raise_test_connection_exception(result)
    if result.status != StatusType.Successful:
        print(f"test connection finished with status {result.status.value}", file=sys.stderr)
        return 1
    print("test connection succeeded")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(64)
    sys.exit(main(sys.argv[1]))
