"""Workflows as data: versioned, drawable step graphs loaded from YAML and validated on load."""

from keel.workflows.catalog import (
    WORKFLOW_DIR,
    Catalog,
    InvalidInput,
    UnknownWorkflow,
    WorkflowError,
    load_workflow,
    parse_workflow,
    validate_input,
)
from keel.workflows.graph import mermaid, ready_steps, topological_order
from keel.workflows.model import (
    DEFAULT_APPROVAL_TIMEOUT_MS,
    ApprovalPolicy,
    Fallback,
    RetryPolicy,
    StepSpec,
    WorkflowSpec,
)
from keel.workflows.template import TemplateError, build_context, references, render, render_text

__all__ = [
    "DEFAULT_APPROVAL_TIMEOUT_MS",
    "ApprovalPolicy",
    "Fallback",
    "WORKFLOW_DIR",
    "Catalog",
    "InvalidInput",
    "RetryPolicy",
    "StepSpec",
    "TemplateError",
    "UnknownWorkflow",
    "WorkflowError",
    "WorkflowSpec",
    "build_context",
    "load_workflow",
    "mermaid",
    "parse_workflow",
    "ready_steps",
    "references",
    "render",
    "render_text",
    "topological_order",
    "validate_input",
]
