"""Quench's workflows: pure orchestration of the playbook, no I/O."""
