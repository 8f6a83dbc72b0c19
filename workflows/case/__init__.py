"""The case workflow, one compromised credential from finding to closed case, and the
playbook's phases it conducts (one module each)."""

from workflows.case.workflow import CaseWorkflow

__all__ = ["CaseWorkflow"]
